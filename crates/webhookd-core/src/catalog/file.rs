//! `WEBHOOKD_EVENT_CATALOG`: the operator's own event types, as TOML
//!
//! ```toml
//! [[event_types]]
//! name = "invoice.paid"
//! description = "An invoice was paid in full."
//! schema = { type = "object", required = ["invoice_id"] }
//! ```
//!
//! or as JSON: `{"event_types": [{"name": …}, …]}`, or the bare list.

use std::collections::HashSet;

use serde::Deserialize;

use super::{Catalog, Definition, DefinitionError, EventType, Origin};

/// The most types a catalog file may hold.
pub const MAX_TYPES: usize = 10_000;

/// Why a catalog file was refused: the file, and what in it to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CatalogFileError {
    #[error("{path}: not a catalog: {detail}")]
    Format { path: String, detail: String },
    #[error("{path}: lists no event types")]
    Empty { path: String },
    #[error("{path}: lists more than {MAX_TYPES} event types")]
    TooMany { path: String },
    #[error("{path}: event type {name:?} is listed twice")]
    Duplicate { path: String, name: EventType },
    #[error("{path}: event type {name:?}: {error}")]
    Definition {
        path: String,
        name: EventType,
        error: DefinitionError,
    },
}

pub(super) fn parse(path: &str, text: &str) -> Result<Catalog, CatalogFileError> {
    let format = |detail: String| CatalogFileError::Format {
        path: path.to_owned(),
        detail,
    };
    let is_toml = std::path::Path::new(path)
        .extension()
        .is_some_and(|extension| extension.eq_ignore_ascii_case("toml"));
    let definitions = if is_toml {
        #[derive(Deserialize)]
        struct TomlFile {
            event_types: Vec<Definition>,
        }
        toml::from_str::<TomlFile>(text)
            .map_err(|error| format(error.to_string()))?
            .event_types
    } else {
        let mut value: serde_json::Value =
            serde_json::from_str(text).map_err(|error| format(error.to_string()))?;
        let list = if value.is_array() {
            value
        } else if let Some(list) = value.get_mut("event_types") {
            list.take()
        } else {
            return Err(format(
                "expected {\"event_types\": [{\"name\", \"description\", \"schema\"?, \"deprecated\"?}, …]}".into(),
            ));
        };
        serde_json::from_value::<Vec<Definition>>(list)
            .map_err(|error| format(format!("event_types: {error}")))?
    };
    if definitions.is_empty() {
        return Err(CatalogFileError::Empty {
            path: path.to_owned(),
        });
    }
    if definitions.len() > MAX_TYPES {
        return Err(CatalogFileError::TooMany {
            path: path.to_owned(),
        });
    }
    let mut seen = HashSet::new();
    for definition in &definitions {
        if !seen.insert(&definition.name) {
            return Err(CatalogFileError::Duplicate {
                path: path.to_owned(),
                name: definition.name.clone(),
            });
        }
    }
    Catalog::from_definitions(definitions, Origin::File).map_err(|(name, error)| {
        CatalogFileError::Definition {
            path: path.to_owned(),
            name,
            error,
        }
    })
}
