//! What to keep and where: mailkeep's archiving rules.
//!
//! A configuration holds an ordered list of `[[rule]]` tables. Each rule
//! matches on the envelope (login, sender, recipients, client, size, tag,
//! capture path) and on header addresses (From, To/Cc), then either skips
//! the message or names destinations such as `mbox:/var/archive/{login}.mbox`.
//! [`RuleSet::plan`] turns one envelope into a [`Plan`]: the exact paths to
//! write, decided per recipient where a rule asks for it. Path templates are
//! checked at load and every placeholder value is escaped so no expansion
//! can leave its destination's directory (see [`template`]).

#![forbid(unsafe_code)]

mod glob;
mod headers;
mod rules;
pub mod template;

pub use glob::Glob;
pub use headers::HeaderInfo;
pub use rules::{
    parse_net, parse_size, Conditions, Decision, Delivery, DestKind, DestSpec, OneOrMany, Outcome,
    Plan, RawConditions, RawRule, Rule, RuleError, RuleSet, Size,
};
pub use template::{Template, TemplateError};
