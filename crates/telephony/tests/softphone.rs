//! A real softphone calls us: Debian's `baresip` (package baresip-core)
//! with no sound card — `ausine` as its microphone (a 1 kHz sine), the
//! `sndfile` filter recording what it hears to WAV — dials an agent's
//! number on a `Telephony` listening on 127.0.0.1. Our handler plays a tone
//! back and hangs up after three seconds.
//!
//! Without `baresip` the test prints why and passes, unless `CI` is set.

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result};
use common::{harness, wav_peaks, Behaviour, NUMBER};

fn baresip_available() -> bool {
    let found = std::process::Command::new("baresip")
        .arg("-h")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if !found {
        if std::env::var_os("CI").is_some() {
            panic!("baresip is required in CI (apt-get install baresip-core)");
        }
        eprintln!("note: baresip not found; softphone test skipped (apt-get install baresip-core)");
    }
    found
}

fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

/// A baresip configuration directory: no sound card, a sine as the source,
/// everything heard recorded by `sndfile` into `dir`.
fn write_config(dir: &Path, sip_port: u16) -> Result<()> {
    let rtp = 42_000 + (std::process::id() % 500) as u16 * 2;
    let config = format!(
        "poll_method epoll\n\
         sip_listen 127.0.0.1:{sip_port}\n\
         module_path /usr/lib/baresip/modules\n\
         module g711.so\n\
         module ausine.so\n\
         module aubridge.so\n\
         module sndfile.so\n\
         module menu.so\n\
         module account.so\n\
         audio_source ausine,1000\n\
         ausrc_srate 48000\n\
         ausrc_channels 2\n\
         audio_player aubridge,nowhere\n\
         audio_alert aubridge,nowhere\n\
         snd_path {}\n\
         rtp_ports {rtp}-{}\n",
        dir.display(),
        rtp + 40
    );
    std::fs::write(dir.join("config"), config)?;
    std::fs::write(
        dir.join("accounts"),
        "<sip:+14155550199@127.0.0.1>;regint=0;audio_codecs=PCMU,PCMA\n",
    )?;
    Ok(())
}

/// The WAV files `sndfile` wrote for what baresip decoded (heard).
fn heard_files(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().ends_with("-dec.wav"))
        })
        .collect()
}

#[tokio::test]
async fn baresip_calls_an_agent_and_both_sides_hear_audio() -> Result<()> {
    if !baresip_available() {
        return Ok(());
    }
    let behaviour = Behaviour {
        hangup_after: Some(Duration::from_secs(3)),
        play_tone: true,
    };
    let mut h = harness("127.0.0.1".parse()?, "127.0.0.0/8", behaviour).await?;
    let conf = tempfile::tempdir()?;
    write_config(conf.path(), free_udp_port())?;
    let dial = format!("/dial sip:{NUMBER}@{}", h.tel.local_addr());
    let run = tokio::process::Command::new("baresip")
        .arg("-f")
        .arg(conf.path())
        .args(["-e", &dial, "-t", "6"])
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .context("baresip did not quit in 30 s")??;
    let log =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    let report = h
        .next_report(Duration::from_secs(10))
        .await
        .with_context(|| format!("baresip log:\n{log}"))?;
    eprintln!("server side: {report:?}");
    assert_eq!(report.ended.as_deref(), Some("agent hung up"), "{log}");
    assert!(
        report.frames >= 100,
        "frames reached the handler: {report:?}"
    );
    assert!(
        report.loud_frames >= 50,
        "baresip's sine reached the handler: {report:?}\n{log}"
    );
    let sessions = h.ended_sessions(1).await?;
    assert!(sessions[0].answered_at.is_some(), "answered");
    assert_eq!(sessions[0].end_reason.as_deref(), Some("agent hung up"));

    let heard = heard_files(conf.path());
    assert!(!heard.is_empty(), "baresip recorded what it heard:\n{log}");
    let (peak, _, samples) = wav_peaks(&heard[0])?;
    eprintln!("baresip heard {samples} samples, peak {peak}");
    assert!(peak > 1_000, "baresip heard our tone (peak {peak})");
    Ok(())
}
