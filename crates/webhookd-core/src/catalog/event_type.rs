//! Event type names, and the 22 JoggAI types that are the catalog when the
//! operator configures none (SPEC §2).

use std::borrow::Cow;
use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::str::FromStr;
use std::sync::Arc;

/// The longest event type name (SPEC §12).
pub const MAX_NAME_LEN: usize = 100;

/// The name of an event type: 1–100 characters of `[a-z0-9_.-]` (SPEC §12).
/// Only the syntax is checked here; whether the type is in the catalog is
/// the [`Catalog`](super::Catalog)'s question. The characters are safe to
/// write unescaped into JSON, a Redis key or a metric label. Cloning is
/// cheap (every delivery of an event carries its type).
#[derive(Clone)]
pub struct EventType(Name);

#[derive(Clone)]
enum Name {
    Static(&'static str),
    Shared(Arc<str>),
}

impl PartialEq for EventType {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for EventType {}

impl Hash for EventType {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl PartialOrd for EventType {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for EventType {
    fn cmp(&self, other: &Self) -> Ordering {
        self.as_str().cmp(other.as_str())
    }
}

impl fmt::Debug for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

/// A name that breaks the syntax of [`EventType`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("event type names are 1-{MAX_NAME_LEN} characters of a-z, 0-9, '_', '.' and '-'")]
pub struct InvalidEventTypeName;

const fn is_valid_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    if bytes.is_empty() || bytes.len() > MAX_NAME_LEN {
        return false;
    }
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if !(b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'.' | b'-')) {
            return false;
        }
        i += 1;
    }
    true
}

impl EventType {
    /// A name known when compiling; a bad one fails the build.
    const fn from_static(name: &'static str) -> EventType {
        assert!(is_valid_name(name), "not an event type name");
        EventType(Name::Static(name))
    }

    /// Checks the syntax of `name`.
    pub fn new(name: &str) -> Result<EventType, InvalidEventTypeName> {
        if is_valid_name(name) {
            Ok(EventType(Name::Shared(Arc::from(name))))
        } else {
            Err(InvalidEventTypeName)
        }
    }

    /// The wire name, e.g. `generated_video_success`.
    pub fn as_str(&self) -> &str {
        match &self.0 {
            Name::Static(name) => name,
            Name::Shared(name) => name,
        }
    }
}

impl FromStr for EventType {
    type Err = InvalidEventTypeName;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        EventType::new(name)
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl serde::Serialize for EventType {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for EventType {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = <Cow<'de, str>>::deserialize(deserializer)?;
        EventType::new(&name).map_err(serde::de::Error::custom)
    }
}

/// Declares a constant per JoggAI type and [`EventType::JOGGAI`] from one
/// table, with what each family is for.
macro_rules! joggai {
    ($($family:literal: $what:literal => $success:ident, $failed:ident;)+) => {
        impl EventType {
            $(
                pub const $success: EventType = EventType::from_static(concat!($family, "_success"));
                pub const $failed: EventType = EventType::from_static(concat!($family, "_failed"));
            )+

            /// The 22 types of SPEC §2, in catalog order.
            pub const JOGGAI: &'static [EventType] = &[$(EventType::$success, EventType::$failed,)+];
        }

        /// What a JoggAI type is for, for `GET /v2/events`.
        pub(super) fn joggai_description(name: &str) -> Option<String> {
            $(
                if name == concat!($family, "_success") {
                    return Some(format!("The {} finished successfully.", $what));
                }
                if name == concat!($family, "_failed") {
                    return Some(format!("The {} failed.", $what));
                }
            )+
            None
        }
    };
}

joggai! {
    "generated_video": "video generation" => GENERATED_VIDEO_SUCCESS, GENERATED_VIDEO_FAILED;
    "generated_product_video": "product video generation" => GENERATED_PRODUCT_VIDEO_SUCCESS, GENERATED_PRODUCT_VIDEO_FAILED;
    "generated_avatar_video": "avatar video generation" => GENERATED_AVATAR_VIDEO_SUCCESS, GENERATED_AVATAR_VIDEO_FAILED;
    "generated_template_video": "template video generation" => GENERATED_TEMPLATE_VIDEO_SUCCESS, GENERATED_TEMPLATE_VIDEO_FAILED;
    "generated_translate_video": "video translation" => GENERATED_TRANSLATE_VIDEO_SUCCESS, GENERATED_TRANSLATE_VIDEO_FAILED;
    "create_avatar": "avatar creation" => CREATE_AVATAR_SUCCESS, CREATE_AVATAR_FAILED;
    "generated_photo_avatar": "photo avatar generation" => GENERATED_PHOTO_AVATAR_SUCCESS, GENERATED_PHOTO_AVATAR_FAILED;
    "generated_product_avatar": "product avatar generation" => GENERATED_PRODUCT_AVATAR_SUCCESS, GENERATED_PRODUCT_AVATAR_FAILED;
    "generated_script": "script generation" => GENERATED_SCRIPT_SUCCESS, GENERATED_SCRIPT_FAILED;
    "generated_image": "image generation" => GENERATED_IMAGE_SUCCESS, GENERATED_IMAGE_FAILED;
    "generated_motion": "motion generation" => GENERATED_MOTION_SUCCESS, GENERATED_MOTION_FAILED;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn the_default_catalog_holds_the_22_types_of_the_spec() {
        assert_eq!(EventType::JOGGAI.len(), 22);
        let names: HashSet<_> = EventType::JOGGAI.iter().map(EventType::as_str).collect();
        assert_eq!(names.len(), 22, "names are unique");
        for family in [
            "generated_video",
            "generated_product_video",
            "generated_avatar_video",
            "generated_template_video",
            "generated_translate_video",
            "create_avatar",
            "generated_photo_avatar",
            "generated_product_avatar",
            "generated_script",
            "generated_image",
            "generated_motion",
        ] {
            for outcome in ["success", "failed"] {
                let name = format!("{family}_{outcome}");
                assert!(names.contains(name.as_str()), "{name} is missing");
                assert!(
                    joggai_description(&name).is_some(),
                    "{name} has no description"
                );
            }
        }
    }

    #[test]
    fn names_follow_the_syntax_of_spec_12() {
        for name in [
            "invoice.paid",
            "a",
            "user-created_v2",
            "0",
            &"x".repeat(MAX_NAME_LEN),
        ] {
            assert_eq!(
                EventType::new(name).map(|t| t.to_string()),
                Ok(name.to_owned())
            );
        }
        for name in [
            "",
            "Invoice.Paid",
            " generated_video_success",
            "a/b",
            "é",
            "a b",
            "a\"b",
            &"x".repeat(MAX_NAME_LEN + 1),
        ] {
            assert_eq!(EventType::new(name), Err(InvalidEventTypeName), "{name:?}");
        }
    }

    #[test]
    fn names_deserialize_only_when_valid() {
        let parsed: EventType = serde_json::from_str("\"invoice.paid\"").unwrap();
        assert_eq!(parsed.as_str(), "invoice.paid");
        assert!(serde_json::from_str::<EventType>("\"Invoice\"").is_err());
    }
}
