//! The event catalog over HTTP (SPEC §1, §12): `GET /v2/events` for
//! endpoint owners, and the admin API that changes it, bearer
//! `WEBHOOKD_ADMIN_TOKEN`.
//!
//! A change is kept in the store and put in force in this process at once;
//! the other processes of a deployment read it within
//! [`REFRESH_EVERY`] (docs/event-types.md).

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::IntoResponse;
use serde::Serialize;
use serde_json::Value;
use webhookd_core::EventType;
use webhookd_core::catalog::{self, Change, Definition, Origin};
use webhookd_store::{put_event_type_change, refresh_catalog};

use crate::AppState;
use crate::admin::authorize;
use crate::auth::Caller;
use crate::endpoints::body_bytes;
use crate::envelope::{ApiError, json_object, success};

/// How often a process reads the admin API's changes other processes made.
pub const REFRESH_EVERY: Duration = Duration::from_secs(5);

/// `GET /v2/events`: the names (as JoggAI's API has them) and, added, each
/// type's definition.
#[derive(Serialize)]
struct EventList<'a> {
    events: Vec<&'a EventType>,
    event_types: Vec<&'a Definition>,
}

pub async fn list(State(state): State<AppState>, _caller: Caller) -> impl IntoResponse {
    let catalog = state.ingest.catalog().current();
    let definitions: Vec<&Definition> = catalog.definitions().map(|(d, _)| d).collect();
    success(EventList {
        events: definitions.iter().map(|d| &d.name).collect(),
        event_types: definitions,
    })
    .into_response()
}

/// One type as the admin API shows it: its definition and where it came from.
#[derive(Serialize)]
struct AdminEventType<'a> {
    #[serde(flatten)]
    definition: &'a Definition,
    origin: Origin,
}

#[derive(Serialize)]
struct AdminEventTypes<'a> {
    event_types: Vec<AdminEventType<'a>>,
}

/// `GET /internal/event-types`: the catalog in force, with origins.
pub async fn admin_list(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<impl IntoResponse, ApiError> {
    authorize(&headers, &state)?;
    refresh_catalog(state.store.as_ref(), state.ingest.catalog()).await?;
    let catalog = state.ingest.catalog().current();
    Ok(success(AdminEventTypes {
        event_types: catalog
            .definitions()
            .map(|(definition, origin)| AdminEventType { definition, origin })
            .collect(),
    })
    .into_response())
}

/// `PUT /internal/event-types/{name}` `{"description", "schema"?,
/// "deprecated"?}`: defines the type, or redefines one the base has.
pub async fn admin_put(
    State(state): State<AppState>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<impl IntoResponse, ApiError> {
    authorize(&headers, &state)?;
    let name = path_name(path)?;
    let mut fields = json_object(&body_bytes(body)?)?;
    let description = match fields.remove("description") {
        Some(Value::String(description)) => description,
        None | Some(Value::Null) => return Err(bad("description: is required")),
        Some(_) => return Err(bad("description: must be a string")),
    };
    let schema = match fields.remove("schema") {
        None | Some(Value::Null) => None,
        Some(schema @ (Value::Object(_) | Value::Bool(_))) => Some(schema),
        Some(_) => return Err(bad("schema: must be a JSON Schema (an object)")),
    };
    let deprecated = match fields.remove("deprecated") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(deprecated)) => deprecated,
        Some(_) => return Err(bad("deprecated: must be true or false")),
    };
    let change = catalog::check_change(
        &name,
        Change::Defined {
            description,
            schema,
            deprecated,
        },
    )
    .map_err(|error| ApiError::BadRequest(error.to_string()))?;
    put_event_type_change(state.store.as_ref(), &name, &change).await?;
    refresh_catalog(state.store.as_ref(), state.ingest.catalog()).await?;
    tracing::info!(event_type = %name, "event type defined through the admin API");
    shown(&state, &name)
}

/// `DELETE /internal/event-types/{name}`: the type leaves the catalog, even
/// if the base (the file or the default) defines it; `PUT` brings it back.
/// Endpoints subscribed to it keep the name and get no more such events.
pub async fn admin_delete(
    State(state): State<AppState>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
) -> Result<impl IntoResponse, ApiError> {
    authorize(&headers, &state)?;
    let name = path_name(path)?;
    refresh_catalog(state.store.as_ref(), state.ingest.catalog()).await?;
    if state.ingest.catalog().current().get(&name).is_none() {
        return Err(not_found(&name));
    }
    put_event_type_change(state.store.as_ref(), &name, &Change::Removed).await?;
    refresh_catalog(state.store.as_ref(), state.ingest.catalog()).await?;
    tracing::info!(event_type = %name, "event type removed through the admin API");
    Ok(success(Removed {
        name,
        removed: true,
    })
    .into_response())
}

#[derive(Serialize)]
struct Removed {
    name: String,
    removed: bool,
}

fn shown(state: &AppState, name: &str) -> Result<axum::response::Response, ApiError> {
    let catalog = state.ingest.catalog().current();
    let (definition, origin) = catalog.get(name).ok_or_else(|| not_found(name))?;
    Ok(success(AdminEventType { definition, origin }).into_response())
}

fn path_name(path: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    let Path(name) = path.map_err(|_| bad("name: is not valid"))?;
    EventType::new(&name).map_err(|error| ApiError::BadRequest(format!("name: {error}")))?;
    Ok(name)
}

fn not_found(name: &str) -> ApiError {
    ApiError::NotFound(format!("event type {name:?} is not in the catalog"))
}

fn bad(message: &str) -> ApiError {
    ApiError::BadRequest(message.to_owned())
}
