//! The embedded persistent store (redb), for a single proxy instance.
