//! Subscription ids: the engine's own, a type apart from job ids and from the text a
//! relay sends (looked up by `&str`, never trusted to be one of ours).

use std::borrow::Borrow;
use std::fmt;

/// A subscription id the engine made (`gs` and a hex counter).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct SubId(String);

impl SubId {
    /// The id for the `n`th subscription.
    pub fn new(n: u64) -> Self {
        Self(format!("gs{n:x}"))
    }

    /// The id as it goes on the wire.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Borrow<str> for SubId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl PartialEq<str> for SubId {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl fmt::Display for SubId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<SubId> for String {
    fn from(id: SubId) -> Self {
        id.0
    }
}
