//! Whose mail is whose: a logged-in person, and the part of the archive
//! they may read, decided by the true envelope alone.
//!
//! A *user* sees a delivery when their login name or one of their addresses
//! is its SASL login, its envelope sender or one of its envelope recipients
//! (Bcc included). That condition is a query expression ([`Identity::scope`])
//! that every read ANDs with what was asked, so search results, counts,
//! message views, downloads and the "no such message" answer all come from
//! the same SQL: an id that is not theirs is indistinguishable from one
//! that does not exist. Auditors and admins see everything.

use crate::users::Role;
use mailkeep_query::{AddressField, Expr, Query, Term, TextField};
use mailkeep_store::chain::DeliveryRecord;

/// Someone logged in: who, with what role, and the addresses that are theirs
/// (lowercased; the login name itself counts too).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The login name, as the audit log records it.
    pub name: String,
    /// What they may do.
    pub role: Role,
    /// Their addresses (the login's own, aliases), lowercased.
    pub addresses: Vec<String>,
    /// Which backend accepted the password (`local`, `imap`, `ldap`).
    pub backend: &'static str,
}

/// Whether a value can stand for itself in an address term: the query's
/// address values are globs (`*`, a leading `@`, angle brackets), so a value
/// using that syntax would widen what a user sees. Such values are left out
/// of the scope (they match nothing rather than more).
fn literal(value: &str) -> bool {
    !value.is_empty()
        && !value.contains('*')
        && !value.starts_with('@')
        && !value.starts_with('<')
        && !value.chars().any(|c| c.is_control() || c.is_whitespace())
}

impl Identity {
    /// Sees every delivery (auditor, admin).
    pub fn sees_all(&self) -> bool {
        matches!(self.role, Role::Auditor | Role::Admin)
    }

    /// The values that identify them: the login name and every address.
    fn own_values(&self) -> Vec<String> {
        let mut v = vec![self.name.to_lowercase()];
        v.extend(self.addresses.iter().map(|a| a.to_lowercase()));
        v.sort();
        v.dedup();
        v.retain(|x| literal(x));
        v
    }

    /// The condition a delivery must meet to be theirs; `None` for those
    /// who see everything. Never empty: with no usable value at all it is
    /// a condition that no delivery meets.
    pub fn scope(&self) -> Option<Expr> {
        if self.sees_all() {
            return None;
        }
        let mut terms = Vec::new();
        for v in self.own_values() {
            terms.push(Expr::Term(Term::Address {
                field: AddressField::Login,
                value: v.clone(),
            }));
            if v.contains('@') {
                terms.push(Expr::Term(Term::Address {
                    field: AddressField::Sender,
                    value: v.clone(),
                }));
                terms.push(Expr::Term(Term::Address {
                    field: AddressField::Recipient,
                    value: v,
                }));
            }
        }
        Some(match terms.len() {
            // `login:<>` is the null login, which no delivery has.
            0 => Expr::Term(Term::Address {
                field: AddressField::Login,
                value: "<>".into(),
            }),
            1 => terms.pop().expect("one term"),
            _ => Expr::Or(terms),
        })
    }

    /// The condition "they sent it": their value is the login or the
    /// envelope sender.
    fn sent_scope(&self) -> Expr {
        let mut terms = Vec::new();
        for v in self.own_values() {
            terms.push(Expr::Term(Term::Address {
                field: AddressField::Login,
                value: v.clone(),
            }));
            if v.contains('@') {
                terms.push(Expr::Term(Term::Address {
                    field: AddressField::Sender,
                    value: v,
                }));
            }
        }
        or(terms)
    }

    /// `query` limited to what they may see. For a user, the terms that
    /// look at the envelope recipients (`to:`, `recipient:`, `bcc:`) also
    /// hold only for what they sent (they know all of its recipients); in
    /// mail they received, `to:` looks at the header To and Cc alone and
    /// `recipient:`/`bcc:` find only themselves, so searching cannot tell
    /// them who else was a Bcc recipient.
    pub fn restrict(&self, query: Query) -> Query {
        let Some(scope) = self.scope() else {
            return query;
        };
        let own = self.own_values();
        let sent = self.sent_scope();
        let expr = match query.expr.map(|e| hide_recipients(e, &sent, &own)) {
            None => scope,
            Some(Expr::And(mut parts)) => {
                parts.insert(0, scope);
                Expr::And(parts)
            }
            Some(e) => Expr::And(vec![scope, e]),
        };
        Query { expr: Some(expr) }
    }

    /// Whether they sent it: their value is its login or envelope sender.
    /// The sender sees all of their recipients.
    pub fn sent(&self, record: &DeliveryRecord) -> bool {
        let own = self.own_values();
        let is_own = |v: &Option<String>| {
            v.as_deref()
                .map(|v| own.iter().any(|o| o.eq_ignore_ascii_case(v)))
                .unwrap_or(false)
        };
        is_own(&record.login) || is_own(&record.sender)
    }

    /// The envelope recipients they may see. Those who see everything and
    /// the sender see all; a recipient sees those the header To and Cc name
    /// (as in their own mailbox) and themselves, not the other Bcc
    /// recipients.
    pub fn visible_recipients(&self, record: &DeliveryRecord, to: &str, cc: &str) -> Vec<String> {
        if self.sees_all() || self.sent(record) {
            return record.recipients.clone();
        }
        let own = self.own_values();
        let named = format!(", {}, {}, ", to, cc).to_lowercase();
        record
            .recipients
            .iter()
            .filter(|r| {
                let r_low = r.to_lowercase();
                own.contains(&r_low)
                    || named.contains(&format!("<{r_low}>"))
                    || named.contains(&format!(", {r_low}, "))
            })
            .cloned()
            .collect()
    }
}

impl Identity {
    /// The envelope as this reader may see it: `record` with only the
    /// recipients of [`Identity::visible_recipients`].
    pub fn visible_record(&self, record: &DeliveryRecord, to: &str, cc: &str) -> DeliveryRecord {
        let mut r = record.clone();
        r.recipients = self.visible_recipients(record, to, cc);
        r
    }
}

/// Any of `terms`, flattened; a condition nothing meets when empty.
fn or(terms: Vec<Expr>) -> Expr {
    let mut flat = Vec::new();
    for t in terms {
        match t {
            Expr::Or(inner) => flat.extend(inner),
            t => flat.push(t),
        }
    }
    match flat.len() {
        0 => Expr::Term(Term::Address {
            field: AddressField::Login,
            value: "<>".into(),
        }),
        1 => flat.pop().expect("one term"),
        _ => Expr::Or(flat),
    }
}

/// All of `parts`, flattened.
fn and(parts: Vec<Expr>) -> Expr {
    let mut flat = Vec::new();
    for p in parts {
        match p {
            Expr::And(inner) => flat.extend(inner),
            p => flat.push(p),
        }
    }
    if flat.len() == 1 {
        return flat.pop().expect("one part");
    }
    Expr::And(flat)
}

/// See [`Identity::restrict`].
fn hide_recipients(e: Expr, sent: &Expr, own: &[String]) -> Expr {
    match e {
        Expr::Not(inner) => Expr::Not(Box::new(hide_recipients(*inner, sent, own))),
        Expr::And(v) => and(v
            .into_iter()
            .map(|x| hide_recipients(x, sent, own))
            .collect()),
        Expr::Or(v) => or(v
            .into_iter()
            .map(|x| hide_recipients(x, sent, own))
            .collect()),
        Expr::Term(Term::Text {
            field: Some(TextField::To),
            value,
        }) => or(vec![
            and(vec![
                sent.clone(),
                Expr::Term(Term::Text {
                    field: Some(TextField::To),
                    value: value.clone(),
                }),
            ]),
            Expr::Term(Term::Text {
                field: Some(TextField::ToHeaders),
                value,
            }),
        ]),
        Expr::Term(Term::Address {
            field: field @ (AddressField::Recipient | AddressField::Bcc),
            value,
        }) => {
            let bare = value
                .strip_prefix('<')
                .and_then(|v| v.strip_suffix('>'))
                .unwrap_or(&value)
                .to_lowercase();
            let term = Expr::Term(Term::Address { field, value });
            if own.contains(&bare) && literal(&bare) {
                term
            } else {
                and(vec![sent.clone(), term])
            }
        }
        other => other,
    }
}

#[cfg(test)]
impl Identity {
    /// A user `name` with the address `name@example.com`, for tests.
    pub(crate) fn test_user(name: &str, backend: &'static str) -> Identity {
        Identity {
            name: name.into(),
            role: Role::User,
            addresses: vec![format!("{name}@example.com")],
            backend,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bob() -> Identity {
        Identity::test_user("bob", "local")
    }

    fn record(sender: &str, recipients: &[&str], login: Option<&str>) -> DeliveryRecord {
        DeliveryRecord {
            v: 1,
            id: 1,
            kind: "delivery".into(),
            content: "00".into(),
            size: 1,
            received: 0,
            capture: "milter".into(),
            sender: Some(sender.into()),
            recipients: recipients.iter().map(|s| s.to_string()).collect(),
            login: login.map(str::to_string),
            login_method: None,
            queue_id: None,
            client_address: None,
            client_port: None,
            client_hostname: None,
            client_helo: None,
            tls: None,
            tags: Vec::new(),
            sender_params: Vec::new(),
        }
    }

    #[test]
    fn a_user_is_scoped_by_login_sender_and_recipient() {
        let scope = bob().scope().expect("a user is scoped");
        let Expr::Or(terms) = scope else {
            panic!("{scope:?}")
        };
        assert_eq!(terms.len(), 4, "{terms:?}");
        let auditor = Identity {
            role: Role::Auditor,
            ..bob()
        };
        assert!(auditor.scope().is_none());
    }

    #[test]
    fn glob_syntax_in_a_value_never_widens_the_scope() {
        let odd = Identity {
            name: "*".into(),
            addresses: vec!["@example.com".into(), "<>".into(), "*@x".into()],
            ..bob()
        };
        let scope = odd.scope().expect("scoped");
        assert_eq!(
            scope,
            Expr::Term(Term::Address {
                field: AddressField::Login,
                value: "<>".into()
            })
        );
    }

    #[test]
    fn a_bcc_recipient_does_not_see_the_other_bcc_recipients() {
        let r = record(
            "alice@example.com",
            &["carol@example.com", "bob@example.com", "dave@example.com"],
            Some("alice"),
        );
        let seen = bob().visible_recipients(&r, "Carol <carol@example.com>", "");
        assert_eq!(seen, vec!["carol@example.com", "bob@example.com"]);
        let sent = record(
            "bob@example.com",
            &["carol@example.com", "dave@example.com"],
            Some("bob"),
        );
        assert_eq!(
            bob().visible_recipients(&sent, "carol@example.com", ""),
            sent.recipients
        );
    }
}
