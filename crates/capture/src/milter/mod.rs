//! Milter capture (Sendmail/Postfix `smtpd_milters`).

pub mod message;
