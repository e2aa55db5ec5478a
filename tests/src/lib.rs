//! Test harness: real `stamp-proxy` processes, a real origin, a real Redis and
//! a real headless Chromium, each on a free loopback port and stopped on drop.

pub mod redis_server;
