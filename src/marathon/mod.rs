//! Everything that talks to or about Marathon.

pub mod address;
pub mod api;
pub mod events;
pub mod model;
pub mod tls;
