//! The OpenAPI document served at `/api/openapi.json`, generated from the
//! handlers' annotations so it cannot drift from the code (a test checks that
//! every API route in [`crate::routes`] is documented).

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::api;

#[derive(OpenApi)]
#[openapi(
    info(title = "Switchboard API", description = "Agents, numbers, contacts, trunks and call sessions of a Switchboard server. Authenticate with `Authorization: Bearer <token>` (create one with `switchboard tokens create --name NAME`)."),
    paths(
        api::list_agents, api::create_agent, api::get_agent, api::update_agent, api::delete_agent,
        api::list_numbers, api::create_number, api::get_number, api::bind_number, api::delete_number,
        api::list_contacts, api::create_contact, api::get_contact, api::update_contact, api::delete_contact,
        api::list_sessions, api::get_session, crate::recordings::get_recording, crate::calls_api::place_call,
        crate::handoffs_api::create_text_call, crate::handoffs_api::create_handoff,
        crate::handoffs_api::list_handoffs, crate::handoffs_api::get_handoff, crate::handoffs_api::redrive_handoff,
        crate::handoffs_api::get_salesforce_settings, crate::handoffs_api::put_salesforce_settings, crate::handoffs_api::test_salesforce,
        api::list_trunks, api::create_trunk, api::get_trunk, api::delete_trunk,
        api::list_tokens, api::create_token, api::revoke_token, api::me,
    ),
    modifiers(&BearerAuth),
    security(("bearer" = []))
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}
