//! The OpenAPI document. Each handler carries its `#[utoipa::path]`
//! (statuses, bodies, parameters) and each body derives its schema; the
//! routes are registered with the document at once (utoipa-axum's
//! `routes!`), so a route cannot be served without being documented.
//! What the router adds around the handlers (the token check, the
//! `{site}` prefix) is added here, by the same code that builds it.

use utoipa::openapi::path::{Operation, ParameterBuilder, ParameterIn};
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, OpenApi, Ref, RefOr, Required};

/// The document's frame: title, the bearer scheme every route needs
/// unless it says otherwise, and the shared responses.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "Vaquero API",
        version = "1",
        description = "The user API of `vaquero standalone` and `vaquero server`. Every error is `{\"error\": {\"kind\", \"message\"}}`. Each site's route is at `/v1/…` (the only site) and at `/v1/sites/{site}/…`."
    ),
    security(("bearer" = [])),
    modifiers(&Frame)
)]
pub(super) struct ApiDoc;

struct Frame;

impl utoipa::Modify for Frame {
    fn modify(&self, doc: &mut OpenApi) {
        let c = doc.components.get_or_insert_with(Default::default);
        c.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        let error = |what: &str| {
            ResponseBuilder::new()
                .description(what)
                .content(
                    "application/json",
                    ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name("Error")))
                        .build(),
                )
                .build()
        };
        c.responses.insert(
            "Unauthorized".into(),
            RefOr::T(error("No token, or a wrong or revoked one")),
        );
        c.responses.insert(
            "Forbidden".into(),
            RefOr::T(error(
                "The token's role may not do this (a read token changes nothing; tokens and backups need the admin role)",
            )),
        );
        c.responses.insert(
            "SeveralSites".into(),
            RefOr::T(error(
                "Bad request; or the server runs several sites: name one with /v1/sites/{site}/…",
            )),
        );
        c.responses.insert(
            "NoSuchSite".into(),
            RefOr::T(error("No such site, or no such resource of it")),
        );
        for (_, name, what) in BODY_REJECTIONS {
            c.responses.insert(name.into(), RefOr::T(error(what)));
        }
    }
}

/// What the API's body extractors (`Body`, `MaybeBody`) answer when a
/// request body will not do: status, shared response, description.
const BODY_REJECTIONS: [(&str, &str, &str); 4] = [
    ("400", "BadJson", "Malformed JSON"),
    ("413", "TooLarge", "The body is too large"),
    ("415", "NotJson", "The body is not `application/json`"),
    (
        "422",
        "WrongShape",
        "The JSON is not an object of the documented shape",
    ),
];

/// Every operation of `doc`, with its method.
fn operations(doc: &mut OpenApi) -> impl Iterator<Item = (&'static str, &mut Operation)> {
    doc.paths.paths.values_mut().flat_map(|item| {
        [
            ("get", &mut item.get),
            ("head", &mut item.head),
            ("post", &mut item.post),
            ("put", &mut item.put),
            ("patch", &mut item.patch),
            ("delete", &mut item.delete),
        ]
        .into_iter()
        .filter_map(|(m, op)| op.as_mut().map(|op| (m, op)))
    })
}

/// Adds `status` as a reference to the shared response `name`, unless
/// the operation documents that status itself.
fn add_response(op: &mut Operation, status: &str, name: &str) {
    op.responses
        .responses
        .entry(status.to_owned())
        .or_insert_with(|| RefOr::Ref(Ref::new(format!("#/components/responses/{name}"))));
}

/// The routes behind the token check: 401 without a valid token, 403
/// for a read token's change; and, where a route takes a body (read by
/// the API's extractors), their rejections.
pub(super) fn behind_tokens(doc: &mut OpenApi) {
    for (method, op) in operations(doc) {
        add_response(op, "401", "Unauthorized");
        if !matches!(method, "get" | "head") {
            add_response(op, "403", "Forbidden");
        }
        if op.request_body.is_some() {
            for (status, name, _) in BODY_REJECTIONS {
                add_response(op, status, name);
            }
        }
    }
}

/// Routes anyone may call: no token.
pub(super) fn public(doc: &mut OpenApi) {
    for (_, op) in operations(doc) {
        op.security = Some(Vec::new());
    }
}

/// A site's routes at `/v1/…`: 400 when the server runs several sites.
pub(super) fn only_site(doc: &mut OpenApi) {
    for (_, op) in operations(doc) {
        add_response(op, "400", "SeveralSites");
    }
}

/// A site's routes at `/v1/sites/{site}/…`: the `{site}` parameter, 404
/// for a site the server does not run, and operation ids of their own.
pub(super) fn any_site(doc: &mut OpenApi) {
    for (_, op) in operations(doc) {
        let site = ParameterBuilder::new()
            .name("site")
            .parameter_in(ParameterIn::Path)
            .required(Required::True)
            .description(Some("The site (`GET /v1/sites` lists them)"))
            .schema(Some(
                utoipa::openapi::ObjectBuilder::new()
                    .schema_type(utoipa::openapi::schema::Type::String),
            ))
            .build();
        op.parameters
            .get_or_insert_with(Vec::new)
            .insert(0, RefOr::T(site));
        add_response(op, "404", "NoSuchSite");
        if let Some(id) = &mut op.operation_id {
            id.push_str("_of_site");
        }
    }
}
