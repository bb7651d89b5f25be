//! The admin API's event type changes (SPEC §12), kept as settings so
//! every process of a deployment reads the same ones.

use webhookd_core::SharedCatalog;
use webhookd_core::catalog::Change;

use crate::{Store, StoreError};

/// Settings `event-type:<name>` hold the JSON of a [`Change`].
const EVENT_TYPE_SETTING: &str = "event-type:";

/// Every change the admin API made, by event type name. A stored value
/// that does not read back is skipped with a warning (and is visible with
/// its name in the log), never a catalog that cannot load.
pub async fn event_type_changes(store: &dyn Store) -> Result<Vec<(String, Change)>, StoreError> {
    let settings = store.settings_with_prefix(EVENT_TYPE_SETTING).await?;
    Ok(settings
        .into_iter()
        .filter_map(|(setting, value)| {
            let name = setting.strip_prefix(EVENT_TYPE_SETTING)?.to_owned();
            match serde_json::from_str::<Change>(&value) {
                Ok(change) => Some((name, change)),
                Err(error) => {
                    tracing::warn!(%name, %error, "skipping an unreadable stored event type change");
                    None
                }
            }
        })
        .collect())
}

/// Keeps `change` for event type `name` (checked by the caller with
/// [`webhookd_core::catalog::check_change`]).
pub async fn put_event_type_change(
    store: &dyn Store,
    name: &str,
    change: &Change,
) -> Result<(), StoreError> {
    let value = serde_json::to_string(change).expect("a change always serializes");
    store
        .put_setting(&format!("{EVENT_TYPE_SETTING}{name}"), Some(&value))
        .await
}

/// Puts the stored changes in force in `catalog`.
pub async fn refresh_catalog(store: &dyn Store, catalog: &SharedCatalog) -> Result<(), StoreError> {
    catalog.apply(event_type_changes(store).await?);
    Ok(())
}
