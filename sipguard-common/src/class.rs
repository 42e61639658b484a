//! What a packet to a SIP port was classified as: a request method, a
//! response, or something that is not SIP at all.

/// Index of a packet class in the per-class counters.
///
/// The numbering is part of the map layout shared with userspace: append new
/// classes before `Count`, never renumber.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    Invite = 0,
    Register = 1,
    Options = 2,
    Ack = 3,
    Bye = 4,
    Cancel = 5,
    Subscribe = 6,
    Notify = 7,
    Message = 8,
    Info = 9,
    Prack = 10,
    Update = 11,
    Refer = 12,
    Publish = 13,
    /// A well-formed request line with a method we do not name (RFC 3261
    /// extension methods): `TOKEN SP sip:|sips:|tel:`.
    OtherRequest = 14,
    /// A status line: `SIP/2.0 NNN `.
    Response = 15,
    /// UDP to a SIP port whose payload is neither a request nor a response
    /// (garbage, truncated start line, empty datagram).
    NotSip = 16,
    /// A TCP segment to a SIP port. Its payload is not classified: XDP sees one
    /// segment of a byte stream, not SIP messages.
    Tcp = 17,
    /// A keep-alive a SIP client must send to the port it registered on
    /// (RFC 5626): a CRLF ping or pong, or a STUN binding request.
    Keepalive = 18,
}

impl Class {
    /// Every class in counter order.
    pub const ALL: [Class; 19] = [
        Class::Invite,
        Class::Register,
        Class::Options,
        Class::Ack,
        Class::Bye,
        Class::Cancel,
        Class::Subscribe,
        Class::Notify,
        Class::Message,
        Class::Info,
        Class::Prack,
        Class::Update,
        Class::Refer,
        Class::Publish,
        Class::OtherRequest,
        Class::Response,
        Class::NotSip,
        Class::Tcp,
        Class::Keepalive,
    ];

    /// Stable lower-case name used in CLI output, JSON and metric labels.
    pub const fn name(self) -> &'static str {
        match self {
            Class::Invite => "invite",
            Class::Register => "register",
            Class::Options => "options",
            Class::Ack => "ack",
            Class::Bye => "bye",
            Class::Cancel => "cancel",
            Class::Subscribe => "subscribe",
            Class::Notify => "notify",
            Class::Message => "message",
            Class::Info => "info",
            Class::Prack => "prack",
            Class::Update => "update",
            Class::Refer => "refer",
            Class::Publish => "publish",
            Class::OtherRequest => "other_request",
            Class::Response => "response",
            Class::NotSip => "not_sip",
            Class::Tcp => "tcp",
            Class::Keepalive => "keepalive",
        }
    }

    /// True for SIP requests (the classes rate limits apply to).
    pub const fn is_request(self) -> bool {
        (self as u32) <= Class::OtherRequest as u32
    }
}

/// Room reserved per verdict in the class counter map, so classes can be
/// added without changing the map's size.
pub const CLASS_SLOTS: u32 = 32;
