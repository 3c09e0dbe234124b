//! `switchboard call`: the test caller. A real SIP user agent (telephony's
//! `dial_uri`) running the voice crate's caller script, with the configured
//! offline speech for what it says and hears.

use std::process::ExitCode;
use std::time::Duration;

use switchboard_media::Frame;
use switchboard_voice::caller::{run_script, CallerConfig, Step};

use crate::cli::CallArgs;
use crate::config::Config;
use crate::Failure;

pub(crate) async fn run(config: &Config, args: CallArgs) -> anyhow::Result<ExitCode> {
    let (ok, summary) = place(config, args).await?;
    println!("{}", serde_json::to_string_pretty(&summary)?);
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Places the call; returns whether it succeeded and the JSON summary.
pub(crate) async fn place(
    config: &Config,
    args: CallArgs,
) -> anyhow::Result<(bool, serde_json::Value)> {
    let target = target_uri(config, &args.to)?;
    let mut steps = Vec::new();
    if let Some(path) = &args.wav {
        steps.push(Step::Play(read_wav(path)?));
    }
    for text in &args.say {
        steps.push(parse_step(text));
    }
    let loopback = target.contains("@127.") || target.contains("@localhost");
    let bind_ip: std::net::IpAddr = if loopback {
        std::net::Ipv4Addr::LOCALHOST.into()
    } else {
        std::net::Ipv4Addr::UNSPECIFIED.into()
    };
    // Ports of our own, away from a server's default range on this machine.
    let media = switchboard_rtp::MediaEngine::new(switchboard_rtp::MediaConfig {
        bind_ip,
        public_ip: config.sip.public_ip,
        ports: switchboard_rtp::PortRange {
            first: 40_000,
            last: 40_999,
        },
        ..Default::default()
    });
    let (stt, tts) = crate::wiring::speech(config).await;
    let stt = (stt.name() != "none").then_some(stt);
    let call = switchboard_telephony::dial_uri(
        &target,
        &media,
        switchboard_telephony::DialUriOptions {
            bind: std::net::SocketAddr::new(bind_ip, 0),
            from: args.from.clone(),
            no_answer_timeout: Duration::from_secs(args.timeout.min(60)),
            recording: None,
            // A `;transport=tls` target is verified against sip.tls_ca.
            tls_ca: config
                .sip
                .tls_ca
                .as_ref()
                .and_then(|path| std::fs::read(path).ok()),
        },
    )
    .await;
    let call = match call {
        Ok(c) => c,
        Err(e) => {
            let summary = serde_json::json!({
                "result": "failed",
                "to": target,
                "error": e.to_string(),
            });
            return Ok((false, summary));
        }
    };
    let line = crate::calls::into_line(call);
    let report = run_script(
        line,
        steps,
        tts,
        stt,
        CallerConfig {
            timeout: Duration::from_secs(args.timeout),
            record: args.record.clone(),
            hang_up_at_end: !args.wait_for_hangup,
            ..Default::default()
        },
    )
    .await;
    let mut json = serde_json::to_value(&report)?;
    json["to"] = serde_json::Value::String(target);
    Ok((report.ok(), json))
}

/// A bare number calls this machine's own SIP listener.
fn target_uri(config: &Config, to: &str) -> anyhow::Result<String> {
    let to = to.trim();
    if to.starts_with("sip:") || to.starts_with("sips:") {
        return Ok(to.to_string());
    }
    let Some(addr) = config.sip.addr else {
        return Err(Failure::usage(
            "--to is a number but sip.addr is off: give a SIP URI such as sip:+14155550100@203.0.113.5:5060",
        ));
    };
    let host = if addr.ip().is_unspecified() {
        std::net::Ipv4Addr::LOCALHOST.into()
    } else {
        addr.ip()
    };
    let user: String = to
        .chars()
        .filter(|c| c.is_ascii_digit() || *c == '+')
        .collect();
    if user.is_empty() {
        return Err(Failure::usage(format!(
            "--to {to:?} is neither a SIP URI nor a phone number"
        )));
    }
    Ok(format!(
        "sip:{user}@{}",
        std::net::SocketAddr::new(host, addr.port())
    ))
}

fn parse_step(text: &str) -> Step {
    let t = text.trim();
    if let Some(keys) = t.strip_prefix("[keys").and_then(|r| r.strip_suffix(']')) {
        return Step::Keys(keys.trim().to_string());
    }
    if let Some(rest) = t.strip_prefix("[interrupt]") {
        return Step::Interrupt {
            text: rest.trim().to_string(),
            after: Duration::from_millis(800),
        };
    }
    Step::Say(t.to_string())
}

/// Reads a WAV as 8 kHz mono frames (other rates are resampled, stereo is
/// mixed down).
fn read_wav(path: &std::path::Path) -> anyhow::Result<Vec<Frame>> {
    let bad = |e: String| Failure::usage(format!("--wav {}: {e}", path.display()));
    let mut reader = hound::WavReader::open(path).map_err(|e| bad(e.to_string()))?;
    let spec = reader.spec();
    if spec.sample_format != hound::SampleFormat::Int || spec.bits_per_sample != 16 {
        return Err(bad("must be 16-bit PCM".into()));
    }
    let channels = usize::from(spec.channels.max(1));
    let samples: Vec<i16> = reader
        .samples::<i16>()
        .collect::<Result<_, _>>()
        .map_err(|e| bad(e.to_string()))?;
    let mono: Vec<i16> = samples
        .chunks(channels)
        .map(|c| (c.iter().map(|&s| i32::from(s)).sum::<i32>() / c.len() as i32) as i16)
        .collect();
    let mut resampler = switchboard_speech::Resampler::new(spec.sample_rate, 8_000)
        .ok_or_else(|| bad(format!("cannot resample {} Hz to 8 kHz", spec.sample_rate)))?;
    let mut pcm = Vec::with_capacity(mono.len());
    resampler.process(&mono, &mut pcm);
    resampler.flush(&mut pcm);
    Ok(pcm
        .chunks(switchboard_media::FRAME_SAMPLES)
        .map(|c| {
            let mut f = [0i16; switchboard_media::FRAME_SAMPLES];
            f[..c.len()].copy_from_slice(c);
            Frame::new(f)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_parse_keys_and_interruptions() {
        assert_eq!(parse_step("[keys 3]"), Step::Keys("3".into()));
        assert_eq!(
            parse_step(" [keys 4155550123#] "),
            Step::Keys("4155550123#".into())
        );
        assert!(
            matches!(parse_step("[interrupt] Stop"), Step::Interrupt { text, .. } if text == "Stop")
        );
        assert_eq!(parse_step("Hello"), Step::Say("Hello".into()));
    }
}
