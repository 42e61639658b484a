//! Blocklist feeds through the real CLI and agent: `block sync --name`
//! replaces one named set and leaves every other entry alone, and its
//! guards refuse what a feed must never block (too broad, allowlisted, the
//! host's own address).

use std::{collections::BTreeMap, time::Duration};

use sipguard_tests::{flood::Ctl, harness::is_root, netns::Lab};

/// `block list --json` as cidr -> origins.
fn blocklist(ctl: &Ctl) -> BTreeMap<String, Vec<String>> {
    ctl.block_list()
        .unwrap()
        .into_iter()
        .map(|(cidr, r)| {
            let origin = r["origin"].as_array().unwrap().iter();
            (
                cidr,
                origin.map(|o| o.as_str().unwrap().to_string()).collect(),
            )
        })
        .collect()
}

fn want(rows: &[(&str, &str)]) -> BTreeMap<String, Vec<String>> {
    rows.iter()
        .map(|(c, o)| (c.to_string(), vec![o.to_string()]))
        .collect()
}

#[test]
fn a_named_set_is_replaced_whole_behind_its_guards() {
    assert!(is_root(), "run as root: the test builds network namespaces");
    let lab = Lab::new("feeds").unwrap();
    let _agent = lab.start_agent(&[]).unwrap();
    let ctl = Ctl::new(lab.iface());
    ctl.run(&["allow", "add", "198.19.10.0/24"]).unwrap();
    ctl.run(&["block", "add", "198.19.1.1"]).unwrap();

    // The server's own address is 198.18.0.1 (the agent's namespace).
    assert_eq!(lab.server.v4.to_string(), "198.18.0.1");
    let feed = "198.19.1.1\n198.19.2.0/24\n198.19.3.3\n198.18.0.0/15\n198.19.10.7\n198.18.0.0/24";
    let out = ctl
        .run_stdin(&["block", "sync", "--name", "feed", "-"], feed)
        .unwrap();
    assert_eq!(
        out.trim(),
        "set feed: 3 entries; added 2, removed 0, refused 3",
        "too broad, allowlisted and own address refused"
    );
    assert_eq!(
        blocklist(&ctl),
        want(&[
            ("198.19.1.1/32", "manual"),
            ("198.19.2.0/24", "set:feed"),
            ("198.19.3.3/32", "set:feed"),
        ])
    );
    // The agent's metrics count the set and its refusals.
    let metrics = lab
        .run(
            &lab.server,
            "curl",
            ["-fsS", "http://127.0.0.1:9464/metrics"],
            Duration::from_secs(10),
        )
        .unwrap();
    let text = String::from_utf8_lossy(&metrics.stdout);
    assert!(
        text.contains("sipguard_blocklist_set_entries{set=\"feed\"} 3")
            && text.contains("sipguard_blocklist_set_refused{set=\"feed\"} 3"),
        "metrics:\n{text}"
    );

    // The feed changes: one entry added, one dropped; the manual entry it
    // no longer lists stays.
    let out = ctl
        .run_stdin(
            &["block", "sync", "--name", "feed", "-"],
            "198.19.2.0/24\n198.19.4.4",
        )
        .unwrap();
    assert_eq!(
        out.trim(),
        "set feed: 2 entries; added 1, removed 1, refused 0"
    );
    assert_eq!(
        blocklist(&ctl),
        want(&[
            ("198.19.1.1/32", "manual"),
            ("198.19.2.0/24", "set:feed"),
            ("198.19.4.4/32", "set:feed"),
        ])
    );

    // Another set listing the same entry keeps it when this one drops it.
    let out = ctl
        .run_stdin(&["block", "sync", "--name", "other", "-"], "198.19.4.4")
        .unwrap();
    assert_eq!(
        out.trim(),
        "set other: 1 entries; added 0, removed 0, refused 0"
    );

    // An empty list (a failed download) does not empty the set...
    assert!(
        ctl.run_stdin(&["block", "sync", "--name", "feed", "-"], "")
            .is_err()
    );
    assert_eq!(blocklist(&ctl).len(), 3);
    // ...unless asked to.
    let out = ctl
        .run_stdin(
            &["block", "sync", "--name", "feed", "--allow-empty", "-"],
            "",
        )
        .unwrap();
    assert_eq!(
        out.trim(),
        "set feed: 0 entries; added 0, removed 1, refused 0"
    );
    assert_eq!(
        blocklist(&ctl),
        want(&[("198.19.1.1/32", "manual"), ("198.19.4.4/32", "set:other")])
    );
}
