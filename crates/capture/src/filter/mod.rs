//! SMTP capture: the content-filter proxy (Postfix `content_filter` /
//! `smtpd_proxy_filter`) and the final archive receiver (`always_bcc`
//! target). Work in progress: the codecs the server will use.

pub mod data;
