//! Readiness of the parts webhookd depends on, as `/readyz` reports it.
//!
//! Long-running components (the RabbitMQ consumer, later the delivery
//! engine) register here and flip their state as connections come and go;
//! the API reads the whole picture. The store is checked live by `/readyz`
//! itself and is not listed here.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

/// Shared, cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Readiness {
    /// Component name → `None` when ready, or why it is not.
    components: Arc<Mutex<BTreeMap<&'static str, Option<String>>>>,
}

impl Readiness {
    /// Adds a component, not ready until it says so.
    pub fn register(&self, name: &'static str, reason: impl Into<String>) {
        self.set(name, Some(reason.into()));
    }

    pub fn set_ready(&self, name: &'static str) {
        self.set(name, None);
    }

    pub fn set_not_ready(&self, name: &'static str, reason: impl Into<String>) {
        self.set(name, Some(reason.into()));
    }

    /// `(component, reason)` for every component that is not ready.
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        self.lock()
            .iter()
            .filter_map(|(name, reason)| reason.clone().map(|reason| (*name, reason)))
            .collect()
    }

    fn set(&self, name: &'static str, reason: Option<String>) {
        self.lock().insert(name, reason);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<&'static str, Option<String>>> {
        // Every update is a single insert, so a panic elsewhere cannot leave
        // the map half-changed.
        self.components
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn components_report_until_they_are_ready() {
        let readiness = Readiness::default();
        assert!(readiness.problems().is_empty());
        readiness.register("amqp", "connecting");
        assert_eq!(
            readiness.problems(),
            vec![("amqp", "connecting".to_owned())]
        );
        readiness.set_ready("amqp");
        assert!(readiness.problems().is_empty());
        readiness.clone().set_not_ready("amqp", "connection lost");
        assert_eq!(
            readiness.problems(),
            vec![("amqp", "connection lost".to_owned())]
        );
    }
}
