//! `sipguard capture` end to end: while a scanner probes the server and
//! then floods it while banned, the capture writes exactly the packets the
//! counters say were dropped for the reasons asked, each with its verdict
//! and reason in its pcapng comment, as tshark reads them; packets the
//! capture did not ask for are not in it.

use std::{
    fs,
    process::{Command, Stdio},
    time::Duration,
};

use sipguard_tests::{
    flood::{Ctl, Delta},
    harness::is_root,
    netns::{Lab, run_bounded, sipguard_bin, stderr, wait_until},
};

/// INVITEs the banned scanner sends after its ban.
const FLOOD: u32 = 20;

/// One OPTIONS with a scanner's User-Agent, then `FLOOD` INVITEs, from the
/// attacker's own address (a UDP socket, so they are real packets).
const SCANNER: &str = r#"
import socket, sys
src, dst, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((src, 5070))
def req(method, i, ua):
    return ("%s sip:100@%s SIP/2.0\r\nVia: SIP/2.0/UDP %s:5070;branch=z9hG4bK%d\r\n"
            "Max-Forwards: 70\r\nFrom: <sip:100@%s>;tag=%d\r\nTo: <sip:100@%s>\r\n"
            "Call-ID: scan%d@%s\r\nCSeq: 1 %s\r\nUser-Agent: %s\r\n"
            "Content-Length: 0\r\n\r\n" % (method, dst, src, i, dst, i, dst, i, src, method, ua)).encode()
s.sendto(req("OPTIONS", 0, "friendly-scanner"), (dst, 5060))
for i in range(n):
    s.sendto(req("INVITE", i + 1, "pbx"), (dst, 5060))
"#;

#[test]
fn a_capture_holds_what_the_counters_say_was_dropped() {
    assert!(is_root(), "run as root: the test builds network namespaces");
    let lab = Lab::new("capture").unwrap();
    let _agent = lab.start_agent(&["--metrics", "off"]).unwrap();
    let ctl = Ctl::new(lab.iface());
    let file = lab.dir().join("dropped.pcapng");

    let want = u64::from(FLOOD) + 1;
    let mut capture = Command::new(sipguard_bin().unwrap())
        .args([
            "capture", "--reason", "scanner", "--reason", "banned", "-s", "128",
        ])
        .args(["-c", &want.to_string(), "-w", file.to_str().unwrap()])
        .args(["--iface", lab.iface()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Started once the file holds its header (written before the kernel
    // is told), and a moment for the selection to be in force.
    wait_until(Duration::from_secs(10), || {
        Ok(fs::metadata(&file).is_ok_and(|m| m.len() > 0))
    })
    .unwrap();
    std::thread::sleep(Duration::from_millis(500));

    let before = ctl.stats().unwrap();
    // Passed, so not captured: a client's OPTIONS.
    let client = lab
        .run(
            &lab.client,
            "python3",
            [
                "-c",
                "import socket,sys; s=socket.socket(2,2); s.sendto(b'OPTIONS sip:x SIP/2.0\\r\\n\\r\\n', (sys.argv[1], 5060))",
                &lab.server.v4.to_string(),
            ],
            Duration::from_secs(10),
        )
        .unwrap();
    assert!(client.status.success(), "{}", stderr(&client));
    let out = lab
        .run(
            &lab.attacker,
            "python3",
            [
                "-c",
                SCANNER,
                &lab.attacker.v4.to_string(),
                &lab.server.v4.to_string(),
                &FLOOD.to_string(),
            ],
            Duration::from_secs(20),
        )
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));

    let done = wait_until(Duration::from_secs(15), || {
        Ok(capture.try_wait()?.is_some())
    });
    if done.is_err() {
        let _ = capture.kill();
    }
    let output = capture.wait_with_output().unwrap();
    let said = String::from_utf8_lossy(&output.stderr).to_string();
    assert!(output.status.success() && done.is_ok(), "capture: {said}");
    let after = ctl.stats().unwrap();
    let d = Delta::new(&before, &after);
    assert_eq!(d.reason("scanner", "drop"), 1, "{}", d.reasons());
    assert_eq!(
        d.reason("banned", "drop"),
        u64::from(FLOOD),
        "{}",
        d.reasons()
    );

    let tshark = run_bounded(
        Command::new("tshark")
            .args(["-r", file.to_str().unwrap(), "-T", "fields"])
            .args(["-e", "ip.src", "-e", "frame.comment", "-e", "sip.Method"]),
        Duration::from_secs(30),
    )
    .unwrap();
    assert!(tshark.status.success(), "tshark: {}", stderr(&tshark));
    let text = String::from_utf8_lossy(&tshark.stdout).to_string();
    eprintln!("{text}{said}");
    let rows: Vec<Vec<&str>> = text.lines().map(|l| l.split('\t').collect()).collect();
    assert_eq!(rows.len() as u64, want, "{text}");
    let attacker = lab.attacker.v4.to_string();
    assert!(rows.iter().all(|r| r[0] == attacker), "{text}");
    let with = |comment: &str, method: &str| {
        rows.iter()
            .filter(|r| r[1] == comment && r.get(2) == Some(&method))
            .count() as u64
    };
    assert_eq!(
        with(
            "sipguard verdict=drop reason=scanner class=options",
            "OPTIONS"
        ),
        d.reason("scanner", "drop")
    );
    assert_eq!(
        with("sipguard verdict=drop reason=banned class=invite", "INVITE"),
        d.reason("banned", "drop")
    );
}
