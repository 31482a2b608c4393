//! The running service: the current [`Mirror`] and what outlives it, the pin
//! store and what immutable tags have seen.

use std::sync::Arc;

use crate::mirror::Mirror;
use crate::pins::guard::TagGuard;
use crate::pins::PinStore;

pub struct App {
    mirror: Arc<Mirror>,
    /// `None` when the process runs without a pin store (in-process tests
    /// that do not pin).
    pub tags: Option<TagGuard>,
}

impl App {
    pub fn new(mirror: Mirror, pins: Option<PinStore>) -> App {
        let every = mirror.config.pin_revalidate;
        App { tags: pins.map(|store| TagGuard::new(store, every)), mirror: Arc::new(mirror) }
    }

    /// The mirror a request uses from start to end.
    pub fn mirror(&self) -> Arc<Mirror> {
        self.mirror.clone()
    }
}
