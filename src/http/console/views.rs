//! The console's pages as HTML (maud: checked at compile time, every value escaped): one
//! layout, and a function per page or part. Views format; they decide nothing.

use chrono::{DateTime, Utc};
use maud::{DOCTYPE, Markup, html};

use super::assets;
use crate::domain::FieldError;
use crate::domain::audit::AuditEvent;
use crate::domain::client::Client;
use crate::domain::signing_key::StoredSigningKey;
use crate::storage::console::StatusCounts;
use crate::storage::usage::ClientUsage;

/// Which part of the console a page belongs to, for the navigation.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Section {
    Overview,
    Clients,
    Audit,
    SigningKeys,
    None,
}

/// Who is signed in, for the header and its sign-out form.
pub struct Who<'a> {
    pub name: &'a str,
    pub csrf: &'a str,
}

pub fn layout(title: &str, section: Section, who: Option<&Who<'_>>, body: Markup) -> Markup {
    let link = |href: &str, text: &str, this: Section| {
        html! {
            a href=(href) aria-current=[(section == this).then_some("page")] { (text) }
        }
    };
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · egregore-relay" }
                link rel="stylesheet" href=(assets::stylesheet_path());
                script src=(assets::script_path()) defer {}
            }
            body {
                header.top {
                    div.bar {
                        a.brand href="/console" { "egregore-relay" }
                        @if let Some(who) = who {
                            nav aria-label="Console" {
                                (link("/console", "Overview", Section::Overview))
                                (link("/console/clients", "Clients", Section::Clients))
                                (link("/console/audit", "Audit log", Section::Audit))
                                (link("/console/signing-keys", "Signing keys", Section::SigningKeys))
                            }
                            div.who {
                                span { "Signed in as " span.mono { (who.name) } }
                                form.inline method="post" action="/console/logout" {
                                    (csrf_field(who.csrf))
                                    button type="submit" { "Sign out" }
                                }
                            }
                        }
                    }
                }
                main id="main" { (body) }
            }
        }
    }
}

pub fn csrf_field(csrf: &str) -> Markup {
    html! { input type="hidden" name="csrf" value=(csrf); }
}

pub fn time(t: Option<DateTime<Utc>>) -> String {
    t.map_or_else(
        || "never".into(),
        |t| t.format("%Y-%m-%d %H:%M UTC").to_string(),
    )
}

/// The sign-in form; `login_csrf` is the token its cookie holds too (see `pages::login`).
pub fn login(message: Option<&str>, login_csrf: &str) -> Markup {
    let body = html! {
        div.login.panel {
            h1 { "Sign in" }
            @if let Some(message) = message {
                p.notice.error role="alert" { (message) }
            }
            form method="post" action="/console/login" {
                input type="hidden" name="login_csrf" value=(login_csrf);
                div.field {
                    label for="credential" { "Admin token or admin client key" }
                    input type="password" id="credential" name="credential" autocomplete="current-password" required autofocus;
                    span.hint { "A client key needs the scope admin." }
                }
                button type="submit" { "Sign in" }
            }
        }
    };
    layout("Sign in", Section::None, None, body)
}

/// A client's state as the console shows it: words, each with a class for its colour.
pub struct Badge {
    pub text: String,
    pub class: &'static str,
}

pub fn badges(badges: &[Badge]) -> Markup {
    html! {
        @for b in badges {
            span class=(format!("status {}", b.class)) { (b.text) } " "
        }
    }
}

pub struct Overview<'a> {
    pub counts: StatusCounts,
    pub chart: Markup,
    pub top: &'a [ClientUsage],
    pub events: &'a [AuditEvent],
}

pub fn overview(page: Overview<'_>, who: &Who<'_>) -> Markup {
    let c = page.counts;
    let body = html! {
        h1 { "Overview" }
        div.cards {
            div.card { span.n { (c.enabled) } span.label { "enabled" } }
            div.card { span.n { (c.expiring) } span.label { "expiring within 7 days" } }
            div.card { span.n { (c.expired) } span.label { "expired" } }
            div.card { span.n { (c.disabled) } span.label { "disabled" } }
        }
        h2 { "Uses in the last 24 hours" }
        div.panel { (page.chart) }
        div.grid2 {
            section {
                h2 { "Top clients, last 24 hours" }
                (top_clients(page.top))
            }
            section {
                h2 { "Recent changes" }
                (audit_table(page.events))
                p { a href="/console/audit" { "The whole audit log" } }
            }
        }
    };
    layout("Overview", Section::Overview, Some(who), body)
}

fn top_clients(top: &[ClientUsage]) -> Markup {
    html! {
        @if top.is_empty() {
            p.muted { "No uses counted yet." }
        } @else {
            div.table-wrap { table {
                thead { tr { th { "client" } th.num { "uses" } th.num { "allowed" } th.num { "refused" } } }
                tbody {
                    @for c in top {
                        @let allowed = c.counters.get(crate::domain::usage::Outcome::Allowed);
                        tr {
                            td {
                                a href=(format!("/console/clients/{}", c.client_id)) {
                                    (c.name.as_deref().unwrap_or("(deleted)"))
                                }
                                br; span.mono.muted { (c.client_id) }
                            }
                            td.num { (c.counters.total()) }
                            td.num { (allowed) }
                            td.num { (c.counters.total() - allowed) }
                        }
                    }
                }
            } }
        }
    }
}

pub fn audit_table(events: &[AuditEvent]) -> Markup {
    html! {
        @if events.is_empty() {
            p.muted { "No events." }
        } @else {
            div.table-wrap { table {
                thead { tr { th { "when" } th { "who" } th { "what" } th { "client" } th.wide { "changes" } } }
                tbody {
                    @for e in events {
                        tr {
                            td { (time(Some(e.at))) }
                            td.mono { (e.actor) }
                            td { (e.action) }
                            td.mono {
                                @if let Some(id) = &e.client_id {
                                    a href=(format!("/console/clients/{id}")) { (id) }
                                }
                            }
                            td.wide.mono { (e.changes.to_string()) }
                        }
                    }
                }
            } }
        }
    }
}

/// A row of the clients list.
pub struct ClientRow<'a> {
    pub client: &'a Client,
    pub badges: Vec<Badge>,
    pub sparkline: Markup,
}

pub struct ClientFilters<'a> {
    pub q: &'a str,
    pub scope: &'a str,
    pub include_disabled: bool,
}

pub fn clients(
    rows: &[ClientRow<'_>],
    filters: &ClientFilters<'_>,
    next: Option<String>,
    message: Option<&str>,
    who: &Who<'_>,
) -> Markup {
    let body = html! {
        div.actions {
            h1 { "Clients" }
            a.button href="/console/clients/new" { "New client" }
        }
        @if let Some(message) = message { p.notice role="status" { (message) } }
        form.filters method="get" action="/console/clients" {
            div { label for="q" { "Name contains" } br; input type="search" id="q" name="q" value=(filters.q); }
            div { label for="scope" { "Scope" } br; input type="text" id="scope" name="scope" value=(filters.scope) placeholder="chat"; }
            div {
                input type="checkbox" id="include_disabled" name="include_disabled" value="true" checked[filters.include_disabled];
                " " label for="include_disabled" { "Show disabled" }
            }
            button.secondary type="submit" { "Filter" }
        }
        @if rows.is_empty() {
            p.muted { "No clients match." }
        } @else {
            div.table-wrap { table {
                thead { tr {
                    th { "name" } th.wide { "id" } th.wide { "key" } th.wide { "scopes" }
                    th.num { "per minute" } th.num { "credits" } th { "status" } th.wide { "last used" } th { "36 h" }
                } }
                tbody {
                    @for row in rows {
                        @let c = row.client;
                        tr {
                            td { a href=(format!("/console/clients/{}", c.client_id.as_str())) { (c.name) } }
                            td.wide.mono { (c.client_id.as_str()) }
                            td.wide.mono { (c.key.map(|k| format!("eg_{}", k.key_id.as_str())).unwrap_or_else(|| "(adopted)".into())) }
                            td.wide { (c.scopes.join(" ")) }
                            td.num { (c.rate_limit) }
                            td.num { (c.credits.map_or_else(|| "∞".to_string(), |c| c.remaining.to_string())) }
                            td { (badges(&row.badges)) }
                            td.wide { (time(c.last_used_at)) }
                            td { (row.sparkline) }
                        }
                    }
                }
            } }
        }
        @if let Some(next) = next {
            nav.pager aria-label="Pages" {
                a href=(format!("/console/clients?q={}&scope={}&include_disabled={}&cursor={}",
                    encode(filters.q), encode(filters.scope), filters.include_disabled, encode(&next))) { "Next page" }
            }
        }
    };
    layout("Clients", Section::Clients, Some(who), body)
}

pub fn encode(text: &str) -> String {
    percent_encoding::utf8_percent_encode(text, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// The editable fields of a client, as text in a form.
#[derive(Debug, Clone, Default)]
pub struct ClientFields {
    pub name: String,
    pub scopes: String,
    pub rate_limit: String,
    pub expires_at: String,
    pub metadata: String,
    /// Empty: unlimited.
    pub credits: String,
    pub refill_amount: String,
    /// `day`, `month`, or empty.
    pub refill_interval: String,
    /// Comma-separated; empty: anywhere.
    pub allowed_networks: String,
    /// The three credit fields as the form first showed them: a save that leaves them as
    /// they were sets no balance, however the balance moved meanwhile.
    pub credits_shown: String,
}

impl ClientFields {
    pub fn of(client: &Client) -> Self {
        let refill = client.credits.and_then(|c| c.refill);
        ClientFields {
            name: client.name.clone(),
            scopes: client.scopes.join(", "),
            rate_limit: client.rate_limit.to_string(),
            expires_at: client
                .expires_at
                .map(|t| t.format("%Y-%m-%dT%H:%M").to_string())
                .unwrap_or_default(),
            metadata: serde_json::Value::Object(client.metadata.clone()).to_string(),
            credits: client
                .credits
                .map(|c| c.remaining.to_string())
                .unwrap_or_default(),
            refill_amount: refill.map(|r| r.amount.to_string()).unwrap_or_default(),
            refill_interval: refill
                .map(|r| r.interval.as_str().to_string())
                .unwrap_or_default(),
            allowed_networks: client.network_texts().join(", "),
            credits_shown: String::new(),
        }
        .with_credits_shown()
    }

    /// The credit fields as one text, for `credits_shown`.
    pub fn credits_text(&self) -> String {
        [&self.credits, &self.refill_amount, &self.refill_interval]
            .map(|t| t.trim())
            .join("|")
    }

    fn with_credits_shown(self) -> Self {
        ClientFields {
            credits_shown: self.credits_text(),
            ..self
        }
    }
}

/// `unlimited`, or what is left and its refill.
pub fn credits_text(client: &Client) -> String {
    match client.credits {
        None => "unlimited".into(),
        Some(c) => match c.refill {
            None => format!("{} left", c.remaining),
            Some(r) => format!(
                "{} left, set to {} every {}",
                c.remaining,
                r.amount,
                r.interval.as_str()
            ),
        },
    }
}

/// The message for `field` among validation errors, if any (pointers such as `/scopes/0`).
fn error_for<'e>(errors: &'e [FieldError], field: &str) -> Option<&'e str> {
    errors
        .iter()
        .find(|e| e.pointer.trim_start_matches('/').split('/').next() == Some(field))
        .map(|e| e.detail.as_str())
}

fn field(
    name: &str,
    label: &str,
    hint: &str,
    errors: &[FieldError],
    input: impl Fn(bool, &str) -> Markup,
) -> Markup {
    let error = error_for(errors, name);
    let described = format!("{name}-hint");
    html! {
        div.field {
            label for=(name) { (label) }
            (input(error.is_some(), &described))
            @if let Some(error) = error {
                span.error id=(format!("{name}-error")) role="alert" { (error) }
            }
            span.hint id=(described) { (hint) }
        }
    }
}

pub fn client_form(
    fields: &ClientFields,
    errors: &[FieldError],
    csrf: &str,
    action: &str,
    submit: &str,
) -> Markup {
    let invalid = |bad: bool| bad.then_some("true");
    html! {
        form method="post" action=(action) novalidate {
            (csrf_field(csrf))
            (field("name", "Name", "1 to 255 characters.", errors, |bad, hint| html! {
                input type="text" id="name" name="name" value=(fields.name) aria-invalid=[invalid(bad)] aria-describedby=(hint) required;
            }))
            (field("scopes", "Scopes", "Comma-separated, such as chat, history. Empty: none.", errors, |bad, hint| html! {
                input type="text" id="scopes" name="scopes" value=(fields.scopes) aria-invalid=[invalid(bad)] aria-describedby=(hint);
            }))
            (field("rate_limit", "Rate limit", "Requests per minute, 1 to 1 000 000.", errors, |bad, hint| html! {
                input type="number" id="rate_limit" name="rate_limit" value=(fields.rate_limit) aria-invalid=[invalid(bad)] aria-describedby=(hint);
            }))
            (field("expires_at", "Expires at (UTC)", "Empty: never. Or an RFC 3339 time with its offset.", errors, |bad, hint| html! {
                input type="text" id="expires_at" name="expires_at" value=(fields.expires_at) placeholder="2027-01-31T00:00" aria-invalid=[invalid(bad)] aria-describedby=(hint);
            }))
            (field("metadata", "Metadata", "A JSON object, at most 4096 bytes.", errors, |bad, hint| html! {
                textarea id="metadata" name="metadata" aria-invalid=[invalid(bad)] aria-describedby=(hint) { (fields.metadata) }
            }))
            input type="hidden" name="credits_shown" value=(fields.credits_shown);
            fieldset {
                legend { "Usage credits" }
                (field("credits", "Credits left", "Each request uses one. Empty: unlimited.", errors, |bad, hint| html! {
                    input type="text" inputmode="numeric" id="credits" name="credits" value=(fields.credits) aria-invalid=[invalid(bad)] aria-describedby=(hint);
                }))
                (field("refill_amount", "Refill to", "Credits set at the start of each interval. Empty: no refill.", errors, |bad, hint| html! {
                    input type="text" inputmode="numeric" id="refill_amount" name="refill_amount" value=(fields.refill_amount) aria-invalid=[invalid(bad)] aria-describedby=(hint);
                }))
                (field("refill_interval", "Refill every", "At 00:00 UTC.", errors, |bad, hint| html! {
                    select id="refill_interval" name="refill_interval" aria-invalid=[invalid(bad)] aria-describedby=(hint) {
                        @for (value, label) in [("", "no refill"), ("day", "day"), ("month", "month")] {
                            option value=(value) selected[fields.refill_interval == value] { (label) }
                        }
                    }
                }))
            }
            (field("allowed_networks", "Allowed networks", "CIDRs or addresses, comma-separated, such as 203.0.113.0/24, 2001:db8::/32. Empty: anywhere.", errors, |bad, hint| html! {
                input type="text" id="allowed_networks" name="allowed_networks" value=(fields.allowed_networks) aria-invalid=[invalid(bad)] aria-describedby=(hint);
            }))
            button type="submit" { (submit) }
        }
    }
}

pub fn new_client(fields: &ClientFields, errors: &[FieldError], who: &Who<'_>) -> Markup {
    let body = html! {
        h1 { "New client" }
        @if !errors.is_empty() { p.notice.error role="alert" { "The client was not created: see the fields below." } }
        div.panel { (client_form(fields, errors, who.csrf, "/console/clients", "Create client")) }
    };
    layout("New client", Section::Clients, Some(who), body)
}

/// The page answering a create or regenerate: the only place the key ever appears.
pub fn key_shown(client: &Client, key: &str, heading: &str, note: &str, who: &Who<'_>) -> Markup {
    let body = html! {
        h1 { (heading) }
        div.notice role="status" {
            p { strong { "Copy this key now. " } "It is shown only on this page and cannot be shown again." }
            div.key {
                code id="new-key" { (key) }
                button.secondary type="button" data-copy="new-key" hidden { "Copy" }
            }
            @if !note.is_empty() { p { (note) } }
        }
        p { a href=(format!("/console/clients/{}", client.client_id.as_str())) { "Go to " (client.name) } }
    };
    layout(heading, Section::Clients, Some(who), body)
}

pub struct Detail<'a> {
    pub client: &'a Client,
    pub badges: Vec<Badge>,
    pub chart: Markup,
    pub range: &'a str,
    pub fields: ClientFields,
    /// The regeneration's grace period as the form shows it.
    pub grace: &'a str,
    pub errors: &'a [FieldError],
    pub events: &'a [AuditEvent],
    pub message: Option<&'a str>,
}

pub const RANGES: [&str; 4] = ["1h", "24h", "7d", "30d"];

pub fn client_detail(page: Detail<'_>, who: &Who<'_>) -> Markup {
    let c = page.client;
    let id = c.client_id.as_str();
    let base = format!("/console/clients/{id}");
    let body = html! {
        h1 { (c.name) " " (badges(&page.badges)) }
        @if let Some(message) = page.message { p.notice role="status" { (message) } }
        @if !page.errors.is_empty() { p.notice.error role="alert" { "Nothing was changed: see the fields below." } }
        div.grid2 {
            div.panel {
                dl.facts {
                    dt { "client id" } dd.mono { (id) }
                    dt { "key" } dd.mono { (c.key.map(|k| format!("eg_{}…", k.key_id.as_str())).unwrap_or_else(|| "adopted key".into())) }
                    dt { "scopes" } dd { (c.scopes.join(" ")) }
                    dt { "rate limit" } dd { (c.rate_limit) " per minute" }
                    dt { "credits" } dd { (credits_text(c)) }
                    dt { "networks" } dd { (if c.allowed_networks.is_empty() { "anywhere".to_string() } else { c.network_texts().join(", ") }) }
                    dt { "expires" } dd { (c.expires_at.map_or_else(|| "never".into(), |t| time(Some(t)))) }
                    dt { "created" } dd { (time(Some(c.created_at))) }
                    dt { "updated" } dd { (time(Some(c.updated_at))) }
                    dt { "last used" } dd { (time(c.last_used_at)) }
                }
            }
            div.panel {
                h2 { "Actions" }
                div.actions {
                    form.inline method="post" action=(format!("{base}/{}", if c.enabled { "disable" } else { "enable" })) {
                        (csrf_field(who.csrf))
                        button.secondary type="submit" { (if c.enabled { "Disable" } else { "Enable" }) }
                    }
                    a.button.secondary href=(format!("{base}/delete")) { "Delete…" }
                }
                form method="post" action=(format!("{base}/regenerate")) {
                    (csrf_field(who.csrf))
                    (field("grace_period_seconds", "Regenerate the key, keeping the old one for (seconds)",
                        "0: the old key and its tokens stop now. At most 604 800 (7 days).", page.errors, |bad, hint| html! {
                        input type="number" id="grace_period_seconds" name="grace_period_seconds" value=(page.grace) min="0" max="604800" aria-invalid=[bad.then_some("true")] aria-describedby=(hint);
                    }))
                    button type="submit" { "Regenerate key" }
                }
            }
        }
        h2 { "Usage" }
        div.panel {
            nav.ranges aria-label="Range" {
                @for r in RANGES {
                    a href=(format!("{base}?range={r}#usage")) aria-current=[(r == page.range).then_some("true")] { (r) }
                }
            }
            div id="usage" { (page.chart) }
        }
        h2 { "Edit" }
        div.panel { (client_form(&page.fields, page.errors, who.csrf, &base, "Save changes")) }
        h2 { "Audit events" }
        (audit_table(page.events))
    };
    layout(&c.name, Section::Clients, Some(who), body)
}

pub fn confirm_delete(client: &Client, who: &Who<'_>) -> Markup {
    let id = client.client_id.as_str();
    let body = html! {
        h1 { "Delete " (client.name) "?" }
        div.panel {
            p { "The client " span.mono { (id) } ", its keys and its tokens are gone for good. This cannot be undone; disabling can." }
            div.actions {
                form.inline method="post" action=(format!("/console/clients/{id}/delete")) {
                    (csrf_field(who.csrf))
                    button.danger type="submit" { "Delete for good" }
                }
                a.button.secondary href=(format!("/console/clients/{id}")) { "Keep it" }
            }
        }
    };
    layout("Delete client", Section::Clients, Some(who), body)
}

pub fn audit(
    events: &[AuditEvent],
    client_id: &str,
    next: Option<String>,
    who: &Who<'_>,
) -> Markup {
    let body = html! {
        h1 { "Audit log" }
        form.filters method="get" action="/console/audit" {
            div { label for="client_id" { "Client id" } br; input type="text" id="client_id" name="client_id" value=(client_id); }
            button.secondary type="submit" { "Filter" }
        }
        (audit_table(events))
        @if let Some(next) = next {
            nav.pager aria-label="Pages" {
                a href=(format!("/console/audit?client_id={}&cursor={}", encode(client_id), encode(&next))) { "Older events" }
            }
        }
    };
    layout("Audit log", Section::Audit, Some(who), body)
}

pub fn signing_keys(keys: &[StoredSigningKey], message: Option<&str>, who: &Who<'_>) -> Markup {
    let body = html! {
        h1 { "Signing keys" }
        @if let Some(message) = message { p.notice role="status" { (message) } }
        p { "Access tokens are signed with the current key; earlier keys stay published until the tokens they signed have expired." }
        div.table-wrap { table {
            thead { tr { th { "kid" } th { "status" } th { "sealed" } th { "created" } th { "retired" } } }
            tbody {
                @for k in keys {
                    tr {
                        td.mono { (k.kid) }
                        td {
                            @if k.retired_at.is_none() { span.status.status-enabled { "current" } }
                            @else { span.status.status-disabled { "retired" } }
                        }
                        td { (if k.is_sealed() { "yes" } else { "no" }) }
                        td { (time(Some(k.created_at))) }
                        td { (time(k.retired_at)) }
                    }
                }
            }
        } }
        form method="post" action="/console/signing-keys/rotate" {
            (csrf_field(who.csrf))
            p { button type="submit" { "Rotate: make a new current key" } }
        }
    };
    layout("Signing keys", Section::SigningKeys, Some(who), body)
}

pub fn error_page(title: &str, message: &str, who: Option<&Who<'_>>) -> Markup {
    let body = html! {
        h1 { (title) }
        p.notice.error role="alert" { (message) }
        p { a href="/console" { "Back to the overview" } }
    };
    layout(title, Section::None, who, body)
}
