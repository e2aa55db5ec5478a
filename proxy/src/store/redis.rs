//! The Redis store, shared by a fleet of proxy instances.
