//! Vector metadata as it travels between processes and is stored on disk.
//!
//! S3 Vectors metadata values are strings, numbers, booleans and lists of those. We keep the key
//! order of the original document so a read returns the metadata the way it was written.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum MetaValue {
    Str(String),
    Num(f64),
    Bool(bool),
    List(Vec<MetaValue>),
}

/// An ordered metadata document: `(key, value)` pairs with distinct keys.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Metadata(pub Vec<(String, MetaValue)>);

impl Metadata {
    pub fn get(&self, key: &str) -> Option<&MetaValue> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}
