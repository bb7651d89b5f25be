//! The event catalog (SPEC §2): the 22 event types a producer may publish and
//! an endpoint may subscribe to. This enum is the only list in the codebase;
//! the API's `GET /v2/events`, validation and metric labels all read it.

use std::fmt;
use std::str::FromStr;

/// Declares the enum, its wire names and `ALL` from one table so the three
/// can never drift apart.
macro_rules! catalog {
    ($($variant:ident => $name:literal,)+) => {
        /// One of the event types of SPEC §2.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum EventType {
            $($variant,)+
        }

        impl EventType {
            /// Every event type, in catalog order.
            pub const ALL: &'static [EventType] = &[$(EventType::$variant,)+];

            /// The wire name, e.g. `generated_video_success`.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(EventType::$variant => $name,)+
                }
            }
        }

        impl FromStr for EventType {
            type Err = UnknownEventType;

            fn from_str(name: &str) -> Result<Self, Self::Err> {
                match name {
                    $($name => Ok(EventType::$variant),)+
                    _ => Err(UnknownEventType),
                }
            }
        }
    };
}

catalog! {
    GeneratedVideoSuccess => "generated_video_success",
    GeneratedVideoFailed => "generated_video_failed",
    GeneratedProductVideoSuccess => "generated_product_video_success",
    GeneratedProductVideoFailed => "generated_product_video_failed",
    GeneratedAvatarVideoSuccess => "generated_avatar_video_success",
    GeneratedAvatarVideoFailed => "generated_avatar_video_failed",
    GeneratedTemplateVideoSuccess => "generated_template_video_success",
    GeneratedTemplateVideoFailed => "generated_template_video_failed",
    GeneratedTranslateVideoSuccess => "generated_translate_video_success",
    GeneratedTranslateVideoFailed => "generated_translate_video_failed",
    CreateAvatarSuccess => "create_avatar_success",
    CreateAvatarFailed => "create_avatar_failed",
    GeneratedPhotoAvatarSuccess => "generated_photo_avatar_success",
    GeneratedPhotoAvatarFailed => "generated_photo_avatar_failed",
    GeneratedProductAvatarSuccess => "generated_product_avatar_success",
    GeneratedProductAvatarFailed => "generated_product_avatar_failed",
    GeneratedScriptSuccess => "generated_script_success",
    GeneratedScriptFailed => "generated_script_failed",
    GeneratedImageSuccess => "generated_image_success",
    GeneratedImageFailed => "generated_image_failed",
    GeneratedMotionSuccess => "generated_motion_success",
    GeneratedMotionFailed => "generated_motion_failed",
}

/// A name that is not in the catalog.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnknownEventType;

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

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn the_catalog_holds_the_22_types_of_the_spec() {
        assert_eq!(EventType::ALL.len(), 22);
        let names: HashSet<_> = EventType::ALL.iter().map(|t| t.as_str()).collect();
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
            }
        }
    }

    #[test]
    fn every_name_parses_back_to_its_type() {
        for &event_type in EventType::ALL {
            assert_eq!(event_type.as_str().parse::<EventType>(), Ok(event_type));
        }
    }

    #[test]
    fn unknown_and_near_miss_names_are_rejected() {
        for name in [
            "",
            "generated_video",
            "GENERATED_VIDEO_SUCCESS",
            " generated_video_success",
        ] {
            assert_eq!(name.parse::<EventType>(), Err(UnknownEventType), "{name:?}");
        }
    }
}
