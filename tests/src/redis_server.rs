//! A real redis-server on a free port, killed on drop.
