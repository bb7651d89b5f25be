//! `GET /portal` (SPEC §9): the endpoint owners' web page, built into the
//! binary. The page is a plain API client of the `/v2` routes; it needs no
//! build step (ES modules and one stylesheet, see docs/portal.md) and
//! loads nothing from another origin.
//!
//! Every portal answer carries a strict Content-Security-Policy — scripts,
//! styles and connections from this origin only, no inline code — with the
//! `frame-ancestors` the operator allows, so the page can be embedded in a
//! platform's dashboard and nowhere else.

use axum::extract::{Path, State};
use axum::http::{HeaderName, HeaderValue, header};
use axum::response::{IntoResponse, Response};

use crate::AppState;
use crate::envelope::ApiError;

const INDEX: &str = include_str!("../portal/index.html");

/// The files under `/portal/assets/`, with their media types.
const ASSETS: &[(&str, &str, &str)] = &[
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_str!("../portal/app.js"),
    ),
    (
        "api.js",
        "text/javascript; charset=utf-8",
        include_str!("../portal/api.js"),
    ),
    (
        "links.js",
        "text/javascript; charset=utf-8",
        include_str!("../portal/links.js"),
    ),
    (
        "catalog.js",
        "text/javascript; charset=utf-8",
        include_str!("../portal/catalog.js"),
    ),
    (
        "deliveries.js",
        "text/javascript; charset=utf-8",
        include_str!("../portal/deliveries.js"),
    ),
    (
        "delivery.js",
        "text/javascript; charset=utf-8",
        include_str!("../portal/delivery.js"),
    ),
    (
        "filter.js",
        "text/javascript; charset=utf-8",
        include_str!("../portal/filter.js"),
    ),
    (
        "secret.js",
        "text/javascript; charset=utf-8",
        include_str!("../portal/secret.js"),
    ),
    (
        "ordering.js",
        "text/javascript; charset=utf-8",
        include_str!("../portal/ordering.js"),
    ),
    (
        "options.js",
        "text/javascript; charset=utf-8",
        include_str!("../portal/options.js"),
    ),
    (
        "endpoint_form.js",
        "text/javascript; charset=utf-8",
        include_str!("../portal/endpoint_form.js"),
    ),
    (
        "routes.js",
        "text/javascript; charset=utf-8",
        include_str!("../portal/routes.js"),
    ),
    (
        "ui.js",
        "text/javascript; charset=utf-8",
        include_str!("../portal/ui.js"),
    ),
    (
        "style.css",
        "text/css; charset=utf-8",
        include_str!("../portal/style.css"),
    ),
    (
        "icon.svg",
        "image/svg+xml",
        include_str!("../portal/icon.svg"),
    ),
];

/// The policy of every portal answer, `frame-ancestors` appended.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; connect-src 'self'; object-src 'none'; \
     base-uri 'none'; form-action 'self'; frame-ancestors ";

/// The headers of a portal answer, and its page with the product's name,
/// made once at start from the configuration (which validated the frame
/// ancestors as a CSP source list).
#[derive(Debug, Clone)]
pub struct PortalHeaders {
    content_security_policy: HeaderValue,
    page: axum::body::Bytes,
}

impl PortalHeaders {
    pub fn new(frame_ancestors: &str) -> Result<Self, header::InvalidHeaderValue> {
        Ok(PortalHeaders {
            content_security_policy: HeaderValue::from_str(&format!(
                "{CONTENT_SECURITY_POLICY}{frame_ancestors}"
            ))?,
            page: page_for(webhookd_core::config::DEFAULT_PORTAL_PRODUCT_NAME),
        })
    }

    /// Names the product `product_name` in the page's title and header
    /// (`portal_product_name`): a platform's own name, not ours.
    #[must_use]
    pub fn with_product_name(self, product_name: &str) -> Self {
        PortalHeaders {
            page: page_for(product_name),
            ..self
        }
    }

    fn answer(&self, content_type: &'static str, body: impl Into<axum::body::Body>) -> Response {
        let headers: [(HeaderName, HeaderValue); 5] = [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (
                header::CONTENT_SECURITY_POLICY,
                self.content_security_policy.clone(),
            ),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
            (
                header::REFERRER_POLICY,
                HeaderValue::from_static("no-referrer"),
            ),
            // The assets are part of the binary: a new version must show
            // at the next load, so the browser revalidates every time.
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ];
        (headers, body.into()).into_response()
    }
}

/// The page with `product_name` in it, escaped for HTML.
fn page_for(product_name: &str) -> axum::body::Bytes {
    let escaped = product_name
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;");
    axum::body::Bytes::from(INDEX.replace("{{product_name}}", &escaped))
}

pub async fn page(State(state): State<AppState>) -> Response {
    state
        .portal
        .answer("text/html; charset=utf-8", state.portal.page.clone())
}

pub async fn asset(State(state): State<AppState>, Path(name): Path<String>) -> Response {
    match ASSETS.iter().find(|(asset, ..)| *asset == name) {
        Some(&(_, content_type, body)) => state.portal.answer(content_type, body),
        None => ApiError::NoRoute(format!("no portal asset {name:?}")).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What one load of the page transfers, uncompressed: the document
    /// and every asset (docs/portal.md quotes the figure).
    #[test]
    fn a_page_load_stays_under_200_kb() {
        let total = INDEX.len() + ASSETS.iter().map(|(_, _, body)| body.len()).sum::<usize>();
        println!("portal page load: {total} bytes");
        assert!(total < 200 * 1024, "{total} bytes");
    }

    #[test]
    fn the_product_name_is_escaped_into_the_title_and_header() {
        let page = page_for("Acme <Hooks> & \"Co\"");
        let page = std::str::from_utf8(&page).unwrap_or_default();
        assert!(page.contains("<title>Webhooks · Acme &lt;Hooks&gt; &amp; &quot;Co&quot;</title>"));
        assert!(page.contains(r#"<span class="brand-name">Acme &lt;Hooks&gt;"#));
        assert!(!page.contains("{{product_name}}"));
        let default = page_for(webhookd_core::config::DEFAULT_PORTAL_PRODUCT_NAME);
        assert!(
            std::str::from_utf8(&default)
                .is_ok_and(|page| page.contains("<title>Webhooks · webhookd</title>"))
        );
    }

    #[test]
    fn the_page_refers_to_assets_that_exist_and_has_no_inline_code() {
        for reference in INDEX.split("/portal/assets/").skip(1) {
            let name = reference.split('"').next().unwrap_or_default();
            assert!(
                ASSETS.iter().any(|(asset, ..)| *asset == name),
                "index.html refers to {name:?}, which is not served"
            );
        }
        // The CSP would block these; API data must never be parsed as HTML.
        for forbidden in ["style=\"", "<style", " onclick=", " onload="] {
            assert!(
                !INDEX.contains(forbidden),
                "index.html contains {forbidden}"
            );
        }
        for (name, _, text) in ASSETS {
            for forbidden in [
                ".innerHTML",
                ".outerHTML",
                "insertAdjacentHTML",
                "eval(",
                "new Function",
            ] {
                assert!(!text.contains(forbidden), "{name} contains {forbidden}");
            }
        }
        let scripts = INDEX.matches("<script").count();
        let external = INDEX
            .matches("<script type=\"module\" src=\"/portal/assets/")
            .count();
        assert_eq!(scripts, external, "index.html has an inline script");
    }
}
