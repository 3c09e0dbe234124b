//! The MIAW client against the sandbox over real HTTP on 127.0.0.1.
//!
//! One test binary (modules below) so the crate links once.
// Tests and their helpers stop loudly on anything unexpected.
#![allow(clippy::unwrap_used)]

mod common;
mod console;
mod events;
mod faults;
mod flows;
