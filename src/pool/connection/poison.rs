//! A connection the caller marked not reusable ([`ConnectionInfo::poison`]): the mark
//! lives in the connection's [`IdleWaker`], which every connection has anyway, so a
//! response's info holds a weak reference to it and no request pays for the feature
//! until it is used.
//!
//! [`ConnectionInfo::poison`]: crate::ConnectionInfo::poison

use std::sync::{Arc, Weak};

use super::waker::IdleWaker;
use super::Conn;
use crate::info::Poison;

impl Poison for IdleWaker {
    fn poison(&self) {
        IdleWaker::poison(self);
    }
}

impl<B> Conn<B> {
    /// Whether the caller marked the connection not reusable.
    #[inline]
    pub(in crate::pool) fn poisoned(&self) -> bool {
        self.watch.poisoned()
    }

    /// The handle a response's `ConnectionInfo` keeps to poison the connection.
    #[inline]
    pub(crate) fn poison_handle(&self) -> Weak<dyn Poison> {
        let weak: Weak<IdleWaker> = Arc::downgrade(&self.watch);
        weak
    }
}
