//! Bamboo's wire shapes, one place for every stage that speaks them: Go's JSON encoding (the API, the ZooKeeper
//! bodies) and Bamboo's app JSON (the API's `/api/state`, the templates' data).

pub mod app;
pub mod gojson;
