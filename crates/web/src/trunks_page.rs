//! Settings → SIP trunks: the carriers and PBXs allowed to send us calls and
//! used to place them (list, add, delete). Passwords are write-only: the page
//! shows only whether one is set.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::{Extension, Form};
use maud::{html, Markup};
use serde::Deserialize;
use serde_json::json;
use switchboard_model::{Transport, Trunk, TrunkInput, TrunkTransfer};

use crate::api::audit;
use crate::auth::{see_other, Caller};
use crate::error::ApiError;
use crate::pages::{
    csrf_field, error_banner, html_response, layout, page_error, select, text_input, time, Nav,
};
use crate::AppState;

/// The add-trunk form as submitted (every field a string, so a bad value is
/// shown back to the user rather than rejected by the extractor).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct TrunkForm {
    name: String,
    host: String,
    port: String,
    transport: String,
    allowed_cidrs: String,
    inbound_username: String,
    inbound_password: String,
    outbound_username: String,
    outbound_password: String,
    register: Option<String>,
    outbound_caller_id: String,
    transfer: String,
}

fn opt(s: &str) -> Option<String> {
    let s = s.trim();
    (!s.is_empty()).then(|| s.to_string())
}

impl TrunkForm {
    fn to_input(&self) -> Result<TrunkInput, ApiError> {
        let port =
            match self.port.trim() {
                "" => None,
                p => Some(p.parse::<u16>().map_err(|_| {
                    ApiError::invalid("port", "must be a port number from 1 to 65535")
                })?),
            };
        let transport = match self.transport.trim() {
            "" => None,
            t => Some(
                t.parse::<Transport>()
                    .map_err(|_| ApiError::invalid("transport", "must be udp, tcp or tls"))?,
            ),
        };
        let transfer = match self.transfer.trim() {
            "" => TrunkTransfer::default(),
            t => t
                .parse::<TrunkTransfer>()
                .map_err(|_| ApiError::invalid("transfer", "must be bridge or refer"))?,
        };
        Ok(TrunkInput {
            name: self.name.trim().to_string(),
            host: self.host.trim().to_string(),
            port,
            transport,
            allowed_cidrs: self
                .allowed_cidrs
                .split([',', '\n', ' '])
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .map(String::from)
                .collect(),
            inbound_username: opt(&self.inbound_username),
            inbound_password: opt(&self.inbound_password),
            outbound_username: opt(&self.outbound_username),
            outbound_password: opt(&self.outbound_password),
            register: self.register.is_some(),
            outbound_caller_id: opt(&self.outbound_caller_id),
            transfer,
        })
    }
}

fn transport_label(t: Transport) -> &'static str {
    match t {
        Transport::Udp => "UDP",
        Transport::Tcp => "TCP",
        Transport::Tls => "TLS",
    }
}

fn transfer_label(t: TrunkTransfer) -> &'static str {
    match t {
        TrunkTransfer::Bridge => "Bridge through Switchboard (works everywhere; recording continues)",
        TrunkTransfer::Refer => "Blind transfer with REFER (the trunk takes the call; falls back to the bridge if refused)",
    }
}

fn auth_words(user: &Option<String>, password_set: bool) -> String {
    match (user, password_set) {
        (Some(u), true) => format!("digest as {u}"),
        (Some(u), false) => format!("{u} (no password set)"),
        (None, _) => "none".into(),
    }
}

fn trunks_table(trunks: &[Trunk], caller: &Caller) -> Markup {
    html! {
        @if trunks.is_empty() {
            p.empty {
                "No trunk yet: SIP listens on loopback only and takes calls from nobody. "
                "Add your carrier (Twilio Elastic SIP, Telnyx, a PBX) with the addresses it sends calls from."
            }
        } @else {
            table {
                thead { tr {
                    th { "Trunk" } th { "Host" } th { "Accepts calls from" } th { "Inbound auth" }
                    th { "Outbound auth" } th { "Register" } th { "Transfer" } th { "Added" } th { span.visually-hidden { "Actions" } }
                } }
                tbody {
                    @for t in trunks {
                        tr data-trunk=(t.name) {
                            td data-label="Trunk" { strong { (t.name) } }
                            td data-label="Host" { code { (t.host) ":" (t.port) } " " (transport_label(t.transport)) }
                            td data-label="Accepts calls from" {
                                @if t.allowed_cidrs.is_empty() { span.muted { "any address with digest credentials" } }
                                @for c in &t.allowed_cidrs { span.pill { (c.to_string()) } " " }
                            }
                            td data-label="Inbound auth" { (auth_words(&t.inbound_username, t.inbound_password_set)) }
                            td data-label="Outbound auth" { (auth_words(&t.outbound_username, t.outbound_password_set)) }
                            td data-label="Register" { @if t.register { "yes" } @else { "no" } }
                            td data-label="Transfer" { (t.transfer.as_str()) }
                            td data-label="Added" { (time(t.created_at)) }
                            td {
                                form.inline method="post" action=(format!("/settings/trunks/{}/delete", t.id))
                                    data-confirm=(format!("Delete trunk {}? Calls from it will be refused.", t.name)) {
                                    (csrf_field(caller))
                                    button.secondary type="submit" { "Delete" }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn add_form(form: &TrunkForm, error: Option<&ApiError>, caller: &Caller) -> Markup {
    html! {
        (error_banner(error))
        form method="post" action="/settings/trunks" {
            (csrf_field(caller))
            fieldset {
                legend { "Add a trunk" }
                (text_input("Name", "name", &form.name, "Such as twilio or office-pbx", error))
                (text_input("Host", "host", &form.host, "Where outbound calls go: the carrier's SIP domain or address", error))
                (text_input("Port", "port", &form.port, "Default 5060", error))
                (select("Transport", "transport", Transport::ALL, &form.transport, transport_label))
                (text_input("Allowed source addresses", "allowed_cidrs", &form.allowed_cidrs,
                    "CIDRs the carrier sends calls from, separated by commas, such as 54.172.60.0/30, 54.244.51.0/30", error))
                (text_input("Inbound username", "inbound_username", &form.inbound_username,
                    "Optional: challenge INVITEs with digest auth (407)", error))
                div.field {
                    label for="inbound_password" { "Inbound password" }
                    input id="inbound_password" name="inbound_password" type="password" autocomplete="new-password";
                }
                (text_input("Outbound username", "outbound_username", &form.outbound_username,
                    "Optional: credentials the carrier asks of our calls", error))
                div.field {
                    label for="outbound_password" { "Outbound password" }
                    input id="outbound_password" name="outbound_password" type="password" autocomplete="new-password";
                }
                div.field {
                    label { input type="checkbox" name="register" value="on" checked[form.register.is_some()] style="width:auto"; " Register with the trunk (REGISTER, refreshed before expiry)" }
                }
                (text_input("Outbound caller id", "outbound_caller_id", &form.outbound_caller_id,
                    "E.164 number shown to people we call, such as +14155550100", error))
                (select("Live transfer", "transfer", TrunkTransfer::ALL, &form.transfer, transfer_label))
            }
            button type="submit" { "Add trunk" }
        }
    }
}

async fn render(
    s: &AppState,
    caller: &Caller,
    form: &TrunkForm,
    error: Option<&ApiError>,
    status: StatusCode,
) -> Response {
    let trunks = match s.store.list_trunks().await {
        Ok(t) => t,
        Err(e) => return page_error(e),
    };
    let body = html! {
        p.muted {
            "A call is answered only when it comes from a trunk's allowed addresses or passes its digest check; "
            "others get 403 and leave nothing behind. Numbers route to agents under Channels → Phone."
        }
        section aria-labelledby="trunks-h" {
            h2 id="trunks-h" { "Trunks" }
            (trunks_table(&trunks, caller))
        }
        section aria-labelledby="add-h" {
            h2 id="add-h" { "New trunk" }
            (add_form(form, error, caller))
        }
    };
    html_response(status, layout("SIP trunks", caller, Nav::Trunks, body))
}

/// `GET /settings/trunks`.
pub async fn trunks_page(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Response {
    render(&s, &caller, &TrunkForm::default(), None, StatusCode::OK).await
}

/// `POST /settings/trunks`: add one.
pub async fn create_trunk_submit(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    Form(form): Form<TrunkForm>,
) -> Response {
    let result = async {
        let spec = form.to_input()?.validate(s.settings.default_region)?;
        Ok::<_, ApiError>(s.store.create_trunk(&spec).await?)
    }
    .await;
    match result {
        Ok(trunk) => {
            audit(
                &s,
                &caller,
                "trunk.create",
                &trunk.name,
                json!({ "id": trunk.id }),
            )
            .await;
            see_other("/settings/trunks")
        }
        Err(e) if e.status().is_client_error() => {
            // Never echo passwords back into the page.
            let form = TrunkForm {
                inbound_password: String::new(),
                outbound_password: String::new(),
                ..form
            };
            render(&s, &caller, &form, Some(&e), e.status()).await
        }
        Err(e) => page_error(e),
    }
}

/// `POST /settings/trunks/{id}/delete`.
pub async fn delete_trunk_submit(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Response {
    let trunk = match s.store.find_trunk(&id).await {
        Ok(t) => t,
        Err(e) => return page_error(e),
    };
    if let Err(e) = s.store.delete_trunk(trunk.id).await {
        return page_error(e);
    }
    audit(
        &s,
        &caller,
        "trunk.delete",
        &trunk.name,
        json!({ "id": trunk.id }),
    )
    .await;
    see_other("/settings/trunks")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_form_becomes_an_input() {
        let form = TrunkForm {
            name: " carrier ".into(),
            host: "sip.example.com".into(),
            port: "5080".into(),
            transport: "tcp".into(),
            allowed_cidrs: "10.0.0.0/8, 192.0.2.1/32\n198.51.100.0/24".into(),
            register: Some("on".into()),
            transfer: "refer".into(),
            ..TrunkForm::default()
        };
        let input = form.to_input().unwrap();
        assert_eq!(input.name, "carrier");
        assert_eq!(input.port, Some(5080));
        assert_eq!(input.transport, Some(Transport::Tcp));
        assert_eq!(
            input.allowed_cidrs,
            ["10.0.0.0/8", "192.0.2.1/32", "198.51.100.0/24"]
        );
        assert!(input.register);
        assert_eq!(input.transfer, TrunkTransfer::Refer);
        assert_eq!(input.inbound_password, None);
    }

    #[test]
    fn bad_values_name_their_field() {
        for (form, field) in [
            (
                TrunkForm {
                    port: "70000".into(),
                    ..Default::default()
                },
                "port",
            ),
            (
                TrunkForm {
                    transport: "carrier-pigeon".into(),
                    ..Default::default()
                },
                "transport",
            ),
            (
                TrunkForm {
                    transfer: "teleport".into(),
                    ..Default::default()
                },
                "transfer",
            ),
        ] {
            let e = form.to_input().unwrap_err();
            assert_eq!(e.field(), Some(field), "{e:?}");
        }
    }
}
