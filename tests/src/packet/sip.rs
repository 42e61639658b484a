//! SIP messages as UDP/TCP payloads, shaped like what real phones, proxies
//! and scanners send. Every part a test may want to vary (method, users,
//! User-Agent, extra headers, body size) is a builder call.

use std::fmt::Write as _;

/// The methods RFC 3261 and its extensions name, in the classifier's order.
pub const METHODS: [&str; 14] = [
    "INVITE",
    "REGISTER",
    "OPTIONS",
    "ACK",
    "BYE",
    "CANCEL",
    "SUBSCRIBE",
    "NOTIFY",
    "MESSAGE",
    "INFO",
    "PRACK",
    "UPDATE",
    "REFER",
    "PUBLISH",
];

/// Payloads sent to a SIP port that are not SIP.
pub mod not_sip {
    pub const HELLO: &[u8] = b"hello world";
    /// Methods are case-sensitive (RFC 3261 7.1): this is not an INVITE.
    pub const LOWERCASE_INVITE: &[u8] =
        b"invite sip:alice@example.com SIP/2.0\r\nVia: SIP/2.0/UDP 198.18.0.2\r\n\r\n";
    /// A status line whose code is out of range.
    pub const BAD_STATUS: &[u8] = b"SIP/2.0 999 x\r\n\r\n";
    /// Three CRLFs: neither RFC 5626's ping (two) nor its pong (one).
    pub const CRLF_TRIPLE: &[u8] = b"\r\n\r\n\r\n";
    pub const EMPTY: &[u8] = b"";
}

pub const DOMAIN: &str = "example.com";

#[derive(Clone, Debug)]
enum Start {
    Request { method: String },
    Response { code: u16, reason: String },
}

#[derive(Clone, Debug)]
enum Body {
    None,
    Sdp,
    /// `n` bytes of text/plain.
    Text(usize),
}

/// A SIP request or response.
#[derive(Clone, Debug)]
pub struct Sip {
    start: Start,
    /// A whole Request-URI, overriding `ruri_user`.
    ruri: Option<String>,
    ruri_user: Option<String>,
    from_user: String,
    to_user: String,
    user_agent: Option<String>,
    via_host: String,
    call_id: String,
    cseq: u32,
    extra: Vec<(String, String)>,
    body: Body,
}

impl Sip {
    /// A request with the headers its method needs (Event for SUBSCRIBE,
    /// Refer-To for REFER, ...). Any upper-case token is accepted, so
    /// extension methods work too.
    pub fn request(method: &str) -> Self {
        let mut sip = Self::base(Start::Request {
            method: method.to_string(),
        });
        match method {
            "REGISTER" => {
                sip.ruri_user = None;
                sip.to_user = sip.from_user.clone();
                sip = sip.header("Expires", "3600");
            }
            "SUBSCRIBE" => sip = sip.header("Event", "presence").header("Expires", "600"),
            "NOTIFY" => {
                sip = sip
                    .header("Event", "presence")
                    .header("Subscription-State", "active;expires=599")
            }
            "PUBLISH" => sip = sip.header("Event", "presence").header("Expires", "3600"),
            "REFER" => sip = sip.header("Refer-To", "<sip:carol@example.com>"),
            "PRACK" => sip = sip.header("RAck", "1 314159 INVITE"),
            "MESSAGE" => sip.body = Body::Text(24),
            "INFO" => sip = sip.header("Info-Package", "dtmf"),
            _ => {}
        }
        sip
    }

    /// A response to an INVITE, e.g. `Sip::response(200, "OK")`.
    pub fn response(code: u16, reason: &str) -> Self {
        Self::base(Start::Response {
            code,
            reason: reason.to_string(),
        })
    }

    /// A softphone's INVITE with an SDP offer: about 900 bytes.
    pub fn invite_with_sdp() -> Self {
        Self::request("INVITE")
            .header("Supported", "replaces, timer, 100rel")
            .header("Session-Expires", "1800")
            .sdp()
    }

    fn base(start: Start) -> Self {
        Self {
            start,
            ruri: None,
            ruri_user: Some("alice".to_string()),
            from_user: "bob".to_string(),
            to_user: "alice".to_string(),
            user_agent: Some("Linphone/5.2.5 (belle-sip/5.2.4)".to_string()),
            via_host: "198.18.0.2".to_string(),
            call_id: "a84b4c76e66710@pc33.example.com".to_string(),
            cseq: 314159,
            extra: Vec::new(),
            body: Body::None,
        }
    }

    /// The Request-URI and To user (`sip:USER@example.com`): what a
    /// scanner enumerates.
    pub fn user(mut self, user: &str) -> Self {
        self.ruri_user = Some(user.to_string());
        self.to_user = user.to_string();
        self
    }

    /// The Request-URI user alone (`None`: `sip:example.com`).
    pub fn ruri_user(mut self, user: Option<&str>) -> Self {
        self.ruri_user = user.map(str::to_string);
        self
    }

    /// The whole Request-URI, any scheme (`sips:...`, `tel:...`).
    pub fn ruri(mut self, uri: &str) -> Self {
        self.ruri = Some(uri.to_string());
        self
    }

    pub fn from_user(mut self, user: &str) -> Self {
        self.from_user = user.to_string();
        self
    }

    pub fn to_user(mut self, user: &str) -> Self {
        self.to_user = user.to_string();
        self
    }

    /// The User-Agent header value (`None` leaves the header out).
    pub fn user_agent(mut self, ua: Option<&str>) -> Self {
        self.user_agent = ua.map(str::to_string);
        self
    }

    /// The host in Via, Contact and the SDP connection line.
    pub fn via_host(mut self, host: &str) -> Self {
        self.via_host = host.to_string();
        self
    }

    pub fn call_id(mut self, id: &str) -> Self {
        self.call_id = id.to_string();
        self
    }

    /// Append a header line (after the standard ones).
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.extra.push((name.to_string(), value.to_string()));
        self
    }

    /// An SDP audio offer as the body.
    pub fn sdp(mut self) -> Self {
        self.body = Body::Sdp;
        self
    }

    /// A text/plain body of exactly `n` bytes (0: no body).
    pub fn body_len(mut self, n: usize) -> Self {
        self.body = if n == 0 { Body::None } else { Body::Text(n) };
        self
    }

    pub fn build(&self) -> Vec<u8> {
        let (content_type, body) = match &self.body {
            Body::None => (None, String::new()),
            Body::Sdp => (Some("application/sdp"), self.sdp_body()),
            Body::Text(n) => (Some("text/plain"), text(*n)),
        };
        let host = &self.via_host;
        let (cseq_method, mut m) = match &self.start {
            Start::Request { method } => {
                let ruri = match (&self.ruri, &self.ruri_user) {
                    (Some(uri), _) => uri.clone(),
                    (None, Some(u)) => format!("sip:{u}@{DOMAIN}"),
                    (None, None) => format!("sip:{DOMAIN}"),
                };
                (method.as_str(), format!("{method} {ruri} SIP/2.0\r\n"))
            }
            Start::Response { code, reason } => ("INVITE", format!("SIP/2.0 {code} {reason}\r\n")),
        };
        let to_tag = match self.start {
            Start::Response { .. } => ";tag=314159",
            Start::Request { .. } => "",
        };
        let _ = write!(
            m,
            "Via: SIP/2.0/UDP {host}:5060;branch=z9hG4bK776asdhds;rport\r\n\
             Max-Forwards: 70\r\n\
             From: \"{from}\" <sip:{from}@{DOMAIN}>;tag=1928301774\r\n\
             To: <sip:{to}@{DOMAIN}>{to_tag}\r\n\
             Call-ID: {call_id}\r\n\
             CSeq: {cseq} {cseq_method}\r\n\
             Contact: <sip:{from}@{host}:5060;transport=udp>\r\n",
            from = self.from_user,
            to = self.to_user,
            call_id = self.call_id,
            cseq = self.cseq,
        );
        if let Some(ua) = &self.user_agent {
            let _ = write!(m, "User-Agent: {ua}\r\n");
        }
        if cseq_method == "INVITE" {
            m.push_str(
                "Allow: INVITE, ACK, CANCEL, OPTIONS, BYE, REFER, NOTIFY, MESSAGE, SUBSCRIBE, \
                 INFO, PRACK, UPDATE\r\n",
            );
        }
        for (name, value) in &self.extra {
            let _ = write!(m, "{name}: {value}\r\n");
        }
        if let Some(ct) = content_type {
            let _ = write!(m, "Content-Type: {ct}\r\n");
        }
        let _ = write!(m, "Content-Length: {}\r\n\r\n{body}", body.len());
        m.into_bytes()
    }

    fn sdp_body(&self) -> String {
        let host = &self.via_host;
        format!(
            "v=0\r\n\
             o={from} 2890844526 2890844526 IN IP4 {host}\r\n\
             s=Talk\r\n\
             c=IN IP4 {host}\r\n\
             t=0 0\r\n\
             m=audio 49170 RTP/AVP 96 0 8 9 18 101\r\n\
             a=rtpmap:96 opus/48000/2\r\n\
             a=rtpmap:0 PCMU/8000\r\n\
             a=rtpmap:8 PCMA/8000\r\n\
             a=rtpmap:9 G722/8000\r\n\
             a=rtpmap:18 G729/8000\r\n\
             a=fmtp:18 annexb=no\r\n\
             a=rtpmap:101 telephone-event/8000\r\n\
             a=fmtp:101 0-16\r\n\
             a=ptime:20\r\n\
             a=sendrecv\r\n",
            from = self.from_user,
        )
    }
}

/// Printable filler of exactly `n` bytes.
fn text(n: usize) -> String {
    "Watson, come here; I want to see you. "
        .chars()
        .cycle()
        .take(n)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header_block(msg: &[u8]) -> (&str, &[u8]) {
        let text = std::str::from_utf8(msg).unwrap();
        let end = text.find("\r\n\r\n").expect("blank line after headers");
        (&text[..end], &msg[end + 4..])
    }

    fn content_length(headers: &str) -> usize {
        headers
            .lines()
            .find_map(|l| l.strip_prefix("Content-Length: "))
            .unwrap()
            .parse()
            .unwrap()
    }

    #[test]
    fn invite_with_sdp_is_about_900_bytes() {
        let msg = Sip::invite_with_sdp().build();
        assert!((850..=950).contains(&msg.len()), "{} bytes", msg.len());
        let (headers, body) = header_block(&msg);
        assert!(headers.starts_with("INVITE sip:alice@example.com SIP/2.0\r\n"));
        assert_eq!(content_length(headers), body.len());
        assert!(body.starts_with(b"v=0\r\n"));
    }

    #[test]
    fn parameters_show_up() {
        let msg = Sip::request("REGISTER")
            .from_user("1001")
            .user_agent(Some("friendly-scanner"))
            .header("X-Test", "1")
            .body_len(33)
            .build();
        let (headers, body) = header_block(&msg);
        assert!(headers.starts_with("REGISTER sip:example.com SIP/2.0\r\n"));
        assert!(headers.contains("\r\nUser-Agent: friendly-scanner\r\n"));
        assert!(headers.contains("\r\nFrom: \"1001\" <sip:1001@example.com>;tag="));
        assert!(headers.contains("\r\nX-Test: 1\r\n"));
        assert_eq!(body.len(), 33);
        assert_eq!(content_length(headers), 33);

        let anon = Sip::request("OPTIONS").user("100").user_agent(None).build();
        let (headers, _) = header_block(&anon);
        assert!(headers.starts_with("OPTIONS sip:100@example.com SIP/2.0\r\n"));
        assert!(!headers.contains("User-Agent"));

        let tel = Sip::request("DIAL").ruri("tel:+15550100").build();
        assert!(tel.starts_with(b"DIAL tel:+15550100 SIP/2.0\r\n"));
    }

    #[test]
    fn responses_start_with_a_status_line() {
        let msg = Sip::response(401, "Unauthorized").build();
        assert!(msg.starts_with(b"SIP/2.0 401 Unauthorized\r\n"));
    }
}

/// RFC 5626 keep-alives a registered client sends to the server's SIP port.
pub mod keepalive {
    /// The double-CRLF ping.
    pub const PING: &[u8] = b"\r\n\r\n";
    /// The single-CRLF pong.
    pub const PONG: &[u8] = b"\r\n";

    /// A STUN binding request (RFC 8489) with `attrs` bytes of attributes
    /// (a multiple of 4) and the length field `stated` (normally `attrs`).
    pub fn stun(msg_type: u16, attrs: usize, stated: u16) -> Vec<u8> {
        let mut m = Vec::with_capacity(20 + attrs);
        m.extend_from_slice(&msg_type.to_be_bytes());
        m.extend_from_slice(&stated.to_be_bytes());
        m.extend_from_slice(&0x2112_a442u32.to_be_bytes());
        m.extend_from_slice(b"sipguard-txn");
        m.extend(std::iter::repeat_n(0u8, attrs));
        m
    }

    pub const BINDING_REQUEST: u16 = 0x0001;
    pub const BINDING_RESPONSE: u16 = 0x0101;
}
