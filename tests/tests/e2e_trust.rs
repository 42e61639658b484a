//! Earned trust and the credential-attack defence end to end (GitHub issue
//! 6): Kamailio with digest authentication (tests/kamailio/auth.cfg) in the
//! server namespace behind `sipguard run`; SIPVicious svcrack guesses one
//! extension's password from the attacker namespace, and a legitimate
//! phone in the client namespace mistypes its password once, then
//! registers.
//!
//! Needs root, kamailio (Debian's package), python3 with sipvicious
//! (sipvicious_svcrack's module), iproute2 and nsenter. Run with
//! `--nocapture` to see the tools' output.

use std::{fs, net::IpAddr, process::Output, time::Duration};

use anyhow::{Context as _, Result, ensure};
use serde_json::Value;
use sipguard_tests::{
    flood::{Ctl, Delta},
    kamailio,
    netns::{Bg, Lab, Node},
};

/// The extension under attack, and its password (never in the wordlists).
const USER: &str = "1001";
const PASSWORD: &str = "lab-Secret-7f3";
/// Bound for one svcrack run: it ends on its own once unanswered.
const SVCRACK_BOUND_SECS: u32 = 40;

/// svcrack as shipped, except its User-Agent: "friendly-scanner" is one of
/// sipguard's ban-tier signatures, which would ban the attacker as a
/// scanner at its first packet. An attacker edits that one string; what is
/// left is a password-guessing tool sipguard must recognise by the server's
/// answers alone.
const SVCRACK: &str = r#"
import sys
from sipvicious.libs import svhelper
defaults = list(svhelper.makeRequest.__defaults__)
defaults[defaults.index("friendly-scanner")] = sys.argv[1]
svhelper.makeRequest.__defaults__ = tuple(defaults)
from sipvicious import svcrack
sys.argv = ["sipvicious_svcrack"] + sys.argv[2:]
svcrack.main()
"#;

/// A phone registering with digest authentication (RFC 2617, qop=auth):
/// one challenge + answer per password given, in order. Prints
/// "PASSWORD: STATUS" per attempt; exits 0 if the last one got 200.
/// usage: LOCAL_IP SERVER_IP USER PASSWORD...
const PHONE: &str = r#"
import hashlib, random, re, socket, sys
local, server, user = sys.argv[1:4]
passwords = sys.argv[4:]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((local, 5060))
s.settimeout(5)
callid = "%x@%s" % (random.getrandbits(64), local)
cseq = 0
def md5(x):
    return hashlib.md5(x.encode()).hexdigest()
def register(auth=None):
    global cseq
    cseq += 1
    m = ("REGISTER sip:%s SIP/2.0\r\n" % server +
         "Via: SIP/2.0/UDP %s:5060;branch=z9hG4bK%x;rport\r\n" % (local, random.getrandbits(48)) +
         "Max-Forwards: 70\r\n"
         "From: <sip:%s@%s>;tag=phone42\r\n" % (user, server) +
         "To: <sip:%s@%s>\r\n" % (user, server) +
         "Call-ID: %s\r\n" % callid +
         "CSeq: %d REGISTER\r\n" % cseq +
         "Contact: <sip:%s@%s:5060>\r\n" % (user, local) +
         "User-Agent: Linphone/5.2.5 (belle-sip/5.2.4)\r\n"
         "Expires: 600\r\n")
    if auth:
        m += auth + "\r\n"
    m += "Content-Length: 0\r\n\r\n"
    s.sendto(m.encode(), (server, 5060))
    while True:
        data = s.recv(65535).decode(errors="replace")
        code = int(data.split(" ", 2)[1])
        if code >= 200:
            return code, data
code = 0
for pw in passwords:
    code, data = register()
    if code != 401:
        print("challenge: %d" % code)
        sys.exit(2)
    h = re.search(r"WWW-Authenticate:\s*Digest\s+(.*)", data, re.I).group(1)
    p = dict(re.findall(r'(\w+)="?([^",\r\n]*)"?', h))
    uri = "sip:%s" % server
    ha1 = md5("%s:%s:%s" % (user, p["realm"], pw))
    ha2 = md5("REGISTER:%s" % uri)
    auth = 'Authorization: Digest username="%s", realm="%s", nonce="%s", uri="%s", algorithm=MD5' % (
        user, p["realm"], p["nonce"], uri)
    if "qop" in p:
        cnonce = "%x" % random.getrandbits(32)
        resp = md5("%s:%s:00000001:%s:auth:%s" % (ha1, p["nonce"], cnonce, ha2))
        auth += ', response="%s", qop=auth, nc=00000001, cnonce="%s"' % (resp, cnonce)
    else:
        auth += ', response="%s"' % md5("%s:%s:%s" % (ha1, p["nonce"], ha2))
    code, _ = register(auth)
    print("%s: %d" % (pw, code), flush=True)
sys.exit(0 if code == 200 else 1)
"#;

/// Start Kamailio with tests/kamailio/auth.cfg on the server's address.
/// The lab stops it (by PID) when dropped.
fn start_kamailio(lab: &Lab) -> Result<Bg> {
    let listen = lab.server.v4.to_string();
    let subs = [
        ("@LISTEN@", listen.as_str()),
        ("@USER@", USER),
        ("@PASSWORD@", PASSWORD),
    ];
    kamailio::start_config(lab, &lab.server, "auth.cfg", &subs, "64")
}

/// REGISTERs from `src` that reached Kamailio (its per-request log line).
fn at_server(kamailio: &Bg, src: IpAddr) -> usize {
    let line = format!("sipguard-lab request REGISTER {src}");
    kamailio
        .output()
        .lines()
        .filter(|l| l.trim_end().ends_with(&line))
        .count()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// svcrack against `USER` with `words` as its dictionary; its output.
fn svcrack(lab: &Lab, node: &Node, name: &str, words: &[String]) -> Result<String> {
    let dict = lab.dir().join(format!("{name}.txt"));
    fs::write(&dict, words.join("\n") + "\n")?;
    let script = lab.dir().join("svcrack-ua.py");
    fs::write(&script, SVCRACK)?;
    let ip = node.v4.to_string();
    let out = lab.run(
        node,
        "timeout",
        [
            &SVCRACK_BOUND_SECS.to_string(),
            "python3",
            script.to_str().context("lab dir is not UTF-8")?,
            "Zoiper rv2.10.20.4",
            "-u",
            USER,
            "-d",
            dict.to_str().context("lab dir is not UTF-8")?,
            "-x",
            &ip,
            "-b",
            &ip,
            &lab.server.v4.to_string(),
        ],
        Duration::from_secs(u64::from(SVCRACK_BOUND_SECS) + 10),
    )?;
    let text = text(&out);
    eprintln!("--- svcrack {name} ({}):\n{text}", out.status);
    Ok(text)
}

/// The rows of a `--json` listing whose `source` is `src`.
fn rows_for(list: &Value, src: IpAddr) -> Vec<Value> {
    list.as_array()
        .map(|rows| {
            rows.iter()
                .filter(|r| r["source"].as_str() == Some(src.to_string().as_str()))
                .cloned()
                .collect()
        })
        .unwrap_or_default()
}

fn trusted(ctl: &Ctl) -> Result<Value> {
    let out = ctl.run(&["trusted", "list", "--json"])?;
    serde_json::from_str(&out).context("parsing `trusted list --json`")
}

/// The legitimate phone: a wrong password once, then the right one.
fn phone_registers(lab: &Lab) -> Result<String> {
    let script = lab.dir().join("phone.py");
    fs::write(&script, PHONE)?;
    let out = lab.run(
        &lab.client,
        "python3",
        [
            script.to_str().context("lab dir is not UTF-8")?,
            &lab.client.v4.to_string(),
            &lab.server.v4.to_string(),
            USER,
            "lab-Secret-7f4",
            PASSWORD,
        ],
        Duration::from_secs(30),
    )?;
    let text = text(&out);
    eprintln!("--- phone ({}):\n{text}", out.status);
    ensure!(out.status.success(), "the phone did not register: {text}");
    Ok(text)
}

/// svcrack guessing 20 wrong passwords is banned with reason auth-failure
/// after the sixth failure answer, and a second run gets nothing through
/// (it is dropped as banned; Kamailio logs none of its REGISTERs), while a
/// phone that mistypes once then registers is never banned and ends up
/// trusted.
#[test]
fn password_guessing_is_banned_and_a_real_phone_is_trusted() -> Result<()> {
    let lab = Lab::new("trust")?;
    let kamailio = start_kamailio(&lab)?;
    let _agent = lab.start_agent(&["--mode", "native"])?;
    let ctl = Ctl::new(lab.iface());
    let client = IpAddr::V4(lab.client.v4);
    let attacker = IpAddr::V4(lab.attacker.v4);

    // The phone: 401 (challenge), 401 (wrong password), 401 (challenge),
    // 200. Three failures, then the 200 clears them and earns trust.
    let phone = phone_registers(&lab)?;
    ensure!(
        phone.contains("lab-Secret-7f4: 401") && phone.contains(&format!("{PASSWORD}: 200")),
        "the phone's attempts: {phone}"
    );
    let t = trusted(&ctl)?;
    eprintln!("trusted after the phone: {t}");
    ensure!(
        rows_for(&t, client).len() == 1,
        "the phone {client} is not trusted: {t}"
    );
    let bans = ctl.bans()?;
    ensure!(
        rows_for(&bans, client).is_empty(),
        "the phone was banned: {bans}"
    );

    // The attacker: 20 wrong passwords.
    let before = ctl.stats()?;
    let words: Vec<String> = (0..20).map(|i| format!("guess{i:02}")).collect();
    let first = svcrack(&lab, &lab.attacker, "words1", &words)?;
    ensure!(
        !first.contains(PASSWORD),
        "svcrack found the password: {first}"
    );
    let bans = ctl.bans()?;
    eprintln!("bans after svcrack: {bans}");
    let ban = rows_for(&bans, attacker);
    ensure!(
        ban.len() == 1,
        "the attacker {attacker} is not banned: {bans}"
    );
    ensure!(
        ban[0]["reason"] == "auth-failure",
        "the attacker was banned, but not for auth-failure: {bans}"
    );
    let reached = at_server(&kamailio, attacker);
    eprintln!("attacker REGISTERs at Kamailio after run 1: {reached}");
    // svcrack sends two REGISTERs per password (one for a challenge, one
    // with the guess), each answered 401: the sixth 401 bans. The ban lets
    // a REGISTER through on probation now and then (a forger's victim must
    // be able to register); six more 401s confirm it and end that. So a
    // handful of guesses reach Kamailio, not twenty.
    ensure!(
        (6..20).contains(&reached),
        "{reached} of svcrack's REGISTERs reached Kamailio"
    );

    // A second run is dropped before Kamailio sees any of it.
    let mid = ctl.stats()?;
    let more: Vec<String> = (0..20).map(|i| format!("again{i:02}")).collect();
    svcrack(&lab, &lab.attacker, "words2", &more)?;
    let after = ctl.stats()?;
    let again = at_server(&kamailio, attacker);
    ensure!(
        again == reached,
        "{} REGISTERs of the banned attacker reached Kamailio",
        again - reached
    );
    let banned = Delta::new(&mid, &after).reason("banned", "drop");
    ensure!(banned > 0, "no drop counted as banned during run 2");
    eprintln!(
        "sipguard over both runs: {}",
        Delta::new(&before, &after).reasons()
    );
    let events = Delta::new(&before, &after);
    ensure!(
        events.event("auth_failure") >= 6,
        "auth_failure counted {} times",
        events.event("auth_failure")
    );

    // The phone is still trusted, and still not banned.
    let t = trusted(&ctl)?;
    ensure!(rows_for(&t, client).len() == 1, "the phone lost trust: {t}");
    ensure!(
        rows_for(&ctl.bans()?, client).is_empty(),
        "the phone was banned"
    );
    Ok(())
}

/// Forged packets from the attacker namespace (scapy), each with the source
/// address of `victim`, to the server's SIP port from port 5062 (so the
/// answers never reach the victim's own SIP socket): `scanners` OPTIONS
/// with a scanner's User-Agent, then `registers` REGISTERs without
/// credentials for USER (each draws a 401 to the victim's address).
const FORGE: &str = r#"
import sys
from scapy.all import IP, UDP, Raw, send
victim, server, scanners, registers = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
def sip(method, n, ua):
    return ("%s sip:%s SIP/2.0\r\nVia: SIP/2.0/UDP %s:5062;branch=z9hG4bKforged%d\r\n"
            "Max-Forwards: 70\r\nFrom: <sip:1001@%s>;tag=f%d\r\nTo: <sip:1001@%s>\r\n"
            "Call-ID: forged%d@%s\r\nCSeq: 1 %s\r\nUser-Agent: %s\r\n"
            "Content-Length: 0\r\n\r\n" % (method, server, victim, n, server, n, server, n, victim, method, ua))
pkts = [IP(src=victim, dst=server)/UDP(sport=5062, dport=5060)/Raw(sip("OPTIONS", n, "friendly-scanner"))
        for n in range(scanners)]
pkts += [IP(src=victim, dst=server)/UDP(sport=5062, dport=5060)/Raw(sip("REGISTER", 100 + n, "Linphone/5.2.5"))
         for n in range(registers)]
send(pkts, inter=0.05, verbose=False)
print("forged %d packets from %s" % (len(pkts), victim))
"#;

fn forge(lab: &Lab, victim: IpAddr, scanners: u32, registers: u32) -> Result<()> {
    let script = lab.dir().join("forge.py");
    fs::write(&script, FORGE)?;
    let out = lab.run(
        &lab.attacker,
        "python3",
        [
            script.to_str().context("lab dir is not UTF-8")?.to_string(),
            victim.to_string(),
            lab.server.v4.to_string(),
            scanners.to_string(),
            registers.to_string(),
        ],
        Duration::from_secs(60),
    )?;
    ensure!(out.status.success(), "scapy failed: {}", text(&out));
    Ok(())
}

/// A registration of USER with its password from `node`; true on 200.
fn registers_from(lab: &Lab, node: &Node) -> Result<bool> {
    let script = lab.dir().join("phone.py");
    fs::write(&script, PHONE)?;
    let out = lab.run(
        node,
        "python3",
        [
            script.to_str().context("lab dir is not UTF-8")?,
            &node.v4.to_string(),
            &lab.server.v4.to_string(),
            USER,
            PASSWORD,
        ],
        Duration::from_secs(30),
    )?;
    Ok(out.status.success())
}

/// Off-path forging (hostile issue): a scapy attacker forges a scanner's
/// OPTIONS and credential-less REGISTERs with the address of a trusted
/// phone, and a scanner OPTIONS with the address of a phone that has not
/// registered yet. The trusted phone is never banned and keeps every
/// registration; the other is banned, starts registering, and is through
/// (its 2xx lifts the ban) within 30 s.
#[test]
fn forged_packets_do_not_keep_phones_out() -> Result<()> {
    let lab = Lab::new("forged")?;
    let _kamailio = start_kamailio(&lab)?;
    let _agent = lab.start_agent(&["--mode", "native"])?;
    let ctl = Ctl::new(lab.iface());
    let trusted_phone = IpAddr::V4(lab.client.v4);
    let newcomer = lab.add_node("newcomer")?;
    let new_phone = IpAddr::V4(newcomer.v4);

    ensure!(
        registers_from(&lab, &lab.client)?,
        "the phone could not register"
    );
    ensure!(
        rows_for(&trusted(&ctl)?, trusted_phone).len() == 1,
        "the phone did not earn trust"
    );

    // Forged evidence against the trusted phone, then it keeps registering.
    forge(&lab, trusted_phone, 5, 10)?;
    let bans = ctl.bans()?;
    ensure!(
        rows_for(&bans, trusted_phone).is_empty(),
        "forged packets banned the trusted phone: {bans}"
    );
    let mut ok = 0;
    const ROUNDS: u32 = 20;
    for _ in 0..ROUNDS {
        if registers_from(&lab, &lab.client)? {
            ok += 1;
        }
    }
    eprintln!("trusted phone under forged evidence: {ok}/{ROUNDS} registrations");
    ensure!(
        f64::from(ok) >= 0.99 * f64::from(ROUNDS),
        "the trusted phone kept {ok} of {ROUNDS} registrations"
    );

    // A phone not yet registered is banned by one forged scanner packet.
    forge(&lab, new_phone, 1, 0)?;
    let bans = ctl.bans()?;
    ensure!(
        rows_for(&bans, new_phone).len() == 1,
        "the forged scanner packet did not ban {new_phone}: {bans}"
    );
    let t0 = std::time::Instant::now();
    let mut through = false;
    while t0.elapsed() < Duration::from_secs(30) {
        if registers_from(&lab, &newcomer)? {
            through = true;
            break;
        }
    }
    eprintln!("the banned newcomer registered after {:?}", t0.elapsed());
    ensure!(through, "the newcomer was kept out for 30 s");
    ensure!(
        rows_for(&ctl.bans()?, new_phone).is_empty(),
        "its 2xx did not lift the ban"
    );
    ensure!(
        rows_for(&trusted(&ctl)?, new_phone).len() == 1,
        "the newcomer did not earn trust"
    );
    let stats = ctl.stats()?;
    eprintln!("sipguard: {}", stats["tables"]);
    Ok(())
}
