//! The event catalog (SPEC §2, §12): which event types producers may
//! publish and endpoints may subscribe to, what each is for, and the JSON
//! Schema its `data` must match.
//!
//! It is data, assembled from three layers:
//! 1. the base: the operator's `WEBHOOKD_EVENT_CATALOG` file, or the 22
//!    JoggAI types when there is none ([`Catalog::joggai`]);
//! 2. the admin API's changes, kept in the store so every process shares
//!    them: a type defined or redefined, or one removed ([`Change`]);
//! 3. merged into the [`Catalog`] in force, which a [`SharedCatalog`] hands
//!    to the API and ingest and swaps whole when the changes change.
//!
//! Schemas are compiled once per catalog, with the linear-time `regex`
//! engine for `pattern` (a schema cannot make ingest backtrack for ever),
//! and without fetching remote `$ref`s (a schema never makes webhookd open
//! a connection).

mod event_type;
mod file;

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::event::{Event, Rejection};
pub use event_type::{EventType, InvalidEventTypeName, MAX_NAME_LEN};
pub use file::CatalogFileError;

/// The longest description a type may have.
pub const MAX_DESCRIPTION_LEN: usize = 1_000;
/// The largest schema a type may have, as compact JSON.
pub const MAX_SCHEMA_BYTES: usize = 64 * 1024;

/// One event type as an operator defines it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Definition {
    pub name: EventType,
    #[serde(default)]
    pub description: String,
    /// JSON Schema (draft 2020-12) that `data` must match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<Value>,
    /// Still accepted and delivered; shown as deprecated so producers and
    /// subscribers move off it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deprecated: bool,
}

/// Where the definition in force came from (the admin listing shows it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    /// The built-in JoggAI catalog.
    Default,
    /// `WEBHOOKD_EVENT_CATALOG`.
    File,
    /// `PUT /internal/event-types/{name}`.
    Admin,
}

/// A change the admin API made, as the store keeps it (one per name).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "change", rename_all = "lowercase")]
pub enum Change {
    /// The type exists with this definition (new, or replacing the base's).
    Defined {
        description: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        schema: Option<Value>,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        deprecated: bool,
    },
    /// The type is gone, even if the base defines it.
    Removed,
}

/// Why a definition was refused; the message names what to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DefinitionError {
    #[error("name: {0}")]
    Name(InvalidEventTypeName),
    #[error("description: at most {MAX_DESCRIPTION_LEN} characters")]
    DescriptionTooLong,
    #[error("schema: larger than {MAX_SCHEMA_BYTES} bytes")]
    SchemaTooLarge,
    #[error("schema: not a valid JSON Schema (draft 2020-12): {0}")]
    Schema(String),
}

/// A definition checked and its schema compiled.
#[derive(Debug, Clone)]
struct Entry {
    definition: Definition,
    origin: Origin,
    validator: Option<Arc<jsonschema::Validator>>,
}

impl Entry {
    fn new(definition: Definition, origin: Origin) -> Result<Entry, DefinitionError> {
        if definition.description.chars().count() > MAX_DESCRIPTION_LEN {
            return Err(DefinitionError::DescriptionTooLong);
        }
        let validator = definition.schema.as_ref().map(compile).transpose()?;
        Ok(Entry {
            definition,
            origin,
            validator,
        })
    }
}

/// Compiles a schema for checking `data`: draft 2020-12 whatever its
/// `$schema` says, `pattern` in linear time, no remote references.
fn compile(schema: &Value) -> Result<Arc<jsonschema::Validator>, DefinitionError> {
    if serde_json::to_string(schema).map_or(0, |text| text.len()) > MAX_SCHEMA_BYTES {
        return Err(DefinitionError::SchemaTooLarge);
    }
    jsonschema::options()
        .with_draft(jsonschema::Draft::Draft202012)
        .with_pattern_options(jsonschema::PatternOptions::regex())
        .build(schema)
        .map(Arc::new)
        .map_err(|error| DefinitionError::Schema(truncate(&error.to_string(), 300)))
}

/// Checks one definition the admin API was given, as a [`Change`] to keep.
pub fn check_change(name: &str, change: Change) -> Result<Change, DefinitionError> {
    let name = EventType::new(name).map_err(DefinitionError::Name)?;
    if let Change::Defined {
        description,
        schema,
        deprecated,
    } = &change
    {
        Entry::new(
            Definition {
                name,
                description: description.clone(),
                schema: schema.clone(),
                deprecated: *deprecated,
            },
            Origin::Admin,
        )?;
    }
    Ok(change)
}

/// The event types in force.
#[derive(Debug, Clone)]
pub struct Catalog {
    /// In catalog order: the base's, then the admin API's additions by name.
    entries: Vec<Entry>,
    by_name: HashMap<EventType, usize>,
}

impl Catalog {
    /// The 22 JoggAI types of SPEC §2, without schemas.
    pub fn joggai() -> Catalog {
        let entries = EventType::JOGGAI
            .iter()
            .map(|name| Entry {
                definition: Definition {
                    name: name.clone(),
                    description: event_type::joggai_description(name.as_str()).unwrap_or_default(),
                    schema: None,
                    deprecated: false,
                },
                origin: Origin::Default,
                validator: None,
            })
            .collect();
        Catalog::from_entries(entries)
    }

    /// The catalog of a `WEBHOOKD_EVENT_CATALOG` file's text; `path` only
    /// names the file in errors and picks the format (`.toml` is TOML,
    /// anything else JSON).
    pub fn from_file(path: &str, text: &str) -> Result<Catalog, CatalogFileError> {
        file::parse(path, text)
    }

    fn from_definitions(
        definitions: Vec<Definition>,
        origin: Origin,
    ) -> Result<Catalog, (EventType, DefinitionError)> {
        let entries = definitions
            .into_iter()
            .map(|definition| {
                let name = definition.name.clone();
                Entry::new(definition, origin).map_err(|error| (name, error))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Catalog::from_entries(entries))
    }

    fn from_entries(entries: Vec<Entry>) -> Catalog {
        let by_name = entries
            .iter()
            .enumerate()
            .map(|(index, entry)| (entry.definition.name.clone(), index))
            .collect();
        Catalog { entries, by_name }
    }

    /// This catalog with the admin API's `changes` (name → change, as the
    /// store keeps them) applied. A change that no longer checks (it was
    /// checked when made) is skipped with a warning rather than taking the
    /// whole catalog down.
    #[must_use]
    pub fn with_changes(&self, changes: &[(String, Change)]) -> Catalog {
        let mut entries = self.entries.clone();
        let mut sorted: Vec<_> = changes.iter().collect();
        sorted.sort_by(|a, b| a.0.cmp(&b.0));
        for (name, change) in sorted {
            let Ok(name) = EventType::new(name) else {
                tracing::warn!(name = %truncate(name, 100), "skipping a stored event type change with an invalid name");
                continue;
            };
            let at = entries
                .iter()
                .position(|entry| entry.definition.name == name);
            match (change, at) {
                (Change::Removed, Some(at)) => {
                    entries.remove(at);
                }
                (Change::Removed, None) => {}
                (
                    Change::Defined {
                        description,
                        schema,
                        deprecated,
                    },
                    at,
                ) => {
                    let definition = Definition {
                        name: name.clone(),
                        description: description.clone(),
                        schema: schema.clone(),
                        deprecated: *deprecated,
                    };
                    match (Entry::new(definition, Origin::Admin), at) {
                        (Ok(entry), Some(at)) => entries[at] = entry,
                        (Ok(entry), None) => entries.push(entry),
                        (Err(error), _) => {
                            tracing::warn!(%name, %error, "skipping a stored event type definition that does not check");
                        }
                    }
                }
            }
        }
        Catalog::from_entries(entries)
    }

    /// Whether `name` is in the catalog.
    pub fn contains(&self, name: &EventType) -> bool {
        self.by_name.contains_key(name)
    }

    /// The definition of `name`, if it is in the catalog.
    pub fn get(&self, name: &str) -> Option<(&Definition, Origin)> {
        let name = EventType::new(name).ok()?;
        let entry = &self.entries[*self.by_name.get(&name)?];
        Some((&entry.definition, entry.origin))
    }

    /// Every definition, in catalog order, with where it came from.
    pub fn definitions(&self) -> impl Iterator<Item = (&Definition, Origin)> {
        self.entries
            .iter()
            .map(|entry| (&entry.definition, entry.origin))
    }

    /// Every name, in catalog order.
    pub fn names(&self) -> Vec<EventType> {
        self.entries
            .iter()
            .map(|entry| entry.definition.name.clone())
            .collect()
    }

    /// Whether `event` may be accepted: its type is in the catalog and its
    /// `data` matches the type's schema, if it has one.
    pub fn check(&self, event: &Event) -> Result<(), Rejection> {
        let unknown = || Rejection::UnknownEventType {
            name: event.event_type.to_string(),
        };
        let index = self.by_name.get(&event.event_type).ok_or_else(unknown)?;
        let Some(validator) = &self.entries[*index].validator else {
            return Ok(());
        };
        // `data` was parsed once already; a schema needs it as a value.
        let data: Value =
            serde_json::from_str(&event.data).map_err(|error| Rejection::NotJson {
                detail: error.to_string(),
            })?;
        match validator.validate(&data) {
            Ok(()) => Ok(()),
            Err(error) => Err(Rejection::SchemaMismatch {
                event: event.event_type.to_string(),
                path: format!("data{}", error.instance_path().as_str()),
                reason: truncate(&error.to_string(), 200),
            }),
        }
    }
}

/// The catalog in force, shared by the API and ingest: cheap to read on
/// every request and event, swapped whole when the admin API's changes
/// change.
#[derive(Debug, Clone)]
pub struct SharedCatalog {
    base: Arc<Catalog>,
    current: Arc<RwLock<Current>>,
}

#[derive(Debug)]
struct Current {
    catalog: Arc<Catalog>,
    /// The changes `catalog` was built with, to rebuild only on a change.
    changes: Vec<(String, Change)>,
}

impl SharedCatalog {
    /// `base` with no admin changes yet.
    pub fn new(base: Catalog) -> SharedCatalog {
        let base = Arc::new(base);
        SharedCatalog {
            current: Arc::new(RwLock::new(Current {
                catalog: Arc::clone(&base),
                changes: Vec::new(),
            })),
            base,
        }
    }

    /// The JoggAI catalog, for tests and embedders that configure none.
    pub fn joggai() -> SharedCatalog {
        SharedCatalog::new(Catalog::joggai())
    }

    /// The catalog in force now.
    pub fn current(&self) -> Arc<Catalog> {
        Arc::clone(
            &self
                .current
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .catalog,
        )
    }

    /// Puts the base with `changes` (all of them, as the store lists them)
    /// in force, unless they are the ones in force already.
    pub fn apply(&self, mut changes: Vec<(String, Change)>) {
        changes.sort_by(|a, b| a.0.cmp(&b.0));
        if self
            .current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .changes
            == changes
        {
            return;
        }
        let catalog = Arc::new(self.base.with_changes(&changes));
        let mut current = self.current.write().unwrap_or_else(PoisonError::into_inner);
        *current = Current { catalog, changes };
    }
}

fn truncate(text: &str, most: usize) -> String {
    text.chars().take(most).collect()
}

#[cfg(test)]
mod tests;
