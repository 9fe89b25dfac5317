//! The sample stream `stile dev` serves: three minutes of ffmpeg's test pattern with
//! a tone, H.264 (three renditions, 640x360 to 320x180, 10 fps) and AAC, cut into
//! 2-second fMP4 (CMAF) segments that one HLS master playlist (`master.m3u8`, with
//! `CODECS`, `RESOLUTION` and `BANDWIDTH`) and one DASH MPD (`manifest.mpd`) share.
//!
//! Generated with ffmpeg at the first start (about 20 s on two cores: small pictures,
//! `-preset ultrafast`, 10 fps) and cached in the user's cache directory
//! (`$XDG_CACHE_HOME/stile` or `~/.cache/stile`), so later starts are instant. A lock
//! file makes concurrent first starts generate it once; a half-written directory is
//! never used (it is renamed into place only once complete).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

/// The cache entry's name: change it whenever the command below changes.
const NAME: &str = "dev-sample-h264-aac-180s-v2";
/// Seconds of media.
pub(crate) const DURATION_SECS: u32 = 180;
/// Segment duration, seconds.
pub(crate) const SEGMENT_SECS: u32 = 2;
/// The renditions: width, height, video bit rate.
const RENDITIONS: [(u32, u32, &str); 3] = [(640, 360, "500k"), (480, 270, "300k"), (320, 180, "150k")];
/// Marks a complete directory.
const COMPLETE: &str = ".complete";

/// The user's cache directory for Stile: `$XDG_CACHE_HOME/stile` or `~/.cache/stile`.
pub(crate) fn default_cache_dir() -> Option<PathBuf> {
    let from = |var: &str| std::env::var_os(var).filter(|v| !v.is_empty()).map(PathBuf::from);
    from("XDG_CACHE_HOME").or_else(|| from("HOME").map(|h| h.join(".cache"))).map(|c| c.join("stile"))
}

/// The directory holding the sample (generating it first if needed); `say` reports
/// progress to the person waiting.
pub(crate) fn ensure(cache: &Path, say: impl Fn(&str)) -> Result<PathBuf, String> {
    let done = cache.join(NAME);
    if done.join(COMPLETE).exists() {
        return Ok(done);
    }
    std::fs::create_dir_all(cache)
        .map_err(|e| format!("cannot create the cache directory {}: {e}", cache.display()))?;
    let lock_path = cache.join(format!("{NAME}.lock"));
    let lock = File::create(&lock_path).map_err(|e| format!("{}: {e}", lock_path.display()))?;
    lock.lock().map_err(|e| format!("cannot lock {}: {e}", lock_path.display()))?;
    if done.join(COMPLETE).exists() {
        return Ok(done); // another `stile dev` made it while we waited
    }
    say(&format!(
        "stile dev: generating the sample stream with ffmpeg ({} renditions, {} s; once, cached in {})",
        RENDITIONS.len(),
        DURATION_SECS,
        done.display()
    ));
    let started = Instant::now();
    let work = tempfile::Builder::new()
        .prefix(".sample-")
        .tempdir_in(cache)
        .map_err(|e| format!("temporary directory in {}: {e}", cache.display()))?;
    generate(work.path())?;
    check(work.path())?;
    std::fs::write(work.path().join(COMPLETE), describe()).map_err(|e| e.to_string())?;
    if done.exists() {
        // Left by an interrupted run before the marker was written.
        std::fs::remove_dir_all(&done).map_err(|e| format!("cannot remove {}: {e}", done.display()))?;
    }
    let work = work.keep();
    std::fs::rename(&work, &done).map_err(|e| format!("cannot move the sample into {}: {e}", done.display()))?;
    say(&format!("stile dev: sample stream ready in {:.1} s", started.elapsed().as_secs_f64()));
    drop(lock);
    Ok(done)
}

/// Copies the sample's files (not the marker) into `to`, creating it.
pub(crate) fn copy_to(from: &Path, to: &Path) -> Result<usize, String> {
    std::fs::create_dir_all(to).map_err(|e| format!("cannot create {}: {e}", to.display()))?;
    let mut n = 0;
    for entry in std::fs::read_dir(from).map_err(|e| e.to_string())? {
        let entry = entry.map_err(|e| e.to_string())?;
        let name = entry.file_name();
        if name == COMPLETE {
            continue;
        }
        std::fs::copy(entry.path(), to.join(&name)).map_err(|e| format!("copying {name:?}: {e}"))?;
        n += 1;
    }
    Ok(n)
}

fn describe() -> String {
    format!(
        "{NAME}: ffmpeg testsrc + sine, H.264 {:?}, AAC, {DURATION_SECS} s, {SEGMENT_SECS} s fMP4 segments\n",
        RENDITIONS
    )
}

/// One ffmpeg run: the test source split into the renditions, the dash muxer writing
/// the MPD and (`-hls_playlist`) the HLS playlists over the same segments.
fn generate(dir: &Path) -> Result<(), String> {
    let n = RENDITIONS.len();
    let mut graph = format!("[0:v]split={n}");
    for i in 0..n {
        graph.push_str(&format!("[s{i}]"));
    }
    for (i, (w, h, _)) in RENDITIONS.iter().enumerate() {
        graph.push_str(&format!(";[s{i}]scale={w}:{h},setsar=1[v{i}]"));
    }
    graph.push_str(";[1:a]volume=0.15[a]");
    let mut cmd = Command::new("ffmpeg");
    cmd.current_dir(dir).args(["-v", "error", "-nostdin", "-y"]);
    cmd.args(["-f", "lavfi", "-i"]).arg(format!("testsrc=size=640x360:rate=10:duration={DURATION_SECS}"));
    // The audio stops 50 ms before the picture: AAC frames (1024 samples) do not divide
    // 180 s, so a track of exactly DURATION_SECS spills its last frame into a 22 ms
    // 91st segment, and hls.js 1.7 never signals the end of that audio stream — the
    // player stalled at 179.87 s instead of ending.
    cmd.args(["-f", "lavfi", "-i"])
        .arg(format!("sine=frequency=330:beep_factor=4:sample_rate=44100:duration={}.95", DURATION_SECS - 1));
    cmd.args(["-filter_complex", &graph]);
    for i in 0..n {
        cmd.args(["-map", &format!("[v{i}]")]);
    }
    cmd.args(["-map", "[a]"]);
    let gop = (SEGMENT_SECS * 10).to_string();
    cmd.args(["-c:v", "libx264", "-preset", "ultrafast", "-profile:v", "baseline", "-pix_fmt", "yuv420p"]);
    cmd.args(["-g", &gop, "-keyint_min", &gop, "-sc_threshold", "0"]);
    for (i, (_, _, rate)) in RENDITIONS.iter().enumerate() {
        cmd.args([format!("-b:v:{i}"), (*rate).to_owned(), format!("-maxrate:v:{i}"), (*rate).to_owned()]);
        cmd.args([format!("-bufsize:v:{i}"), (*rate).to_owned()]);
    }
    cmd.args(["-c:a", "aac", "-b:a", "64k", "-ac", "1"]);
    cmd.args(["-f", "dash", "-seg_duration", &SEGMENT_SECS.to_string(), "-use_template", "1", "-use_timeline", "0"]);
    cmd.args(["-hls_playlist", "1", "-adaptation_sets", "id=0,streams=v id=1,streams=a"]);
    cmd.args([
        "-init_seg_name",
        "init-$RepresentationID$.m4s",
        "-media_seg_name",
        "seg-$RepresentationID$-$Number%03d$.m4s",
    ]);
    cmd.arg("manifest.mpd");
    let out = cmd.output().map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            "ffmpeg is not installed; it makes the sample stream at the first start (Debian: apt-get install \
             ffmpeg; scripts/dev installs it)"
                .to_owned()
        } else {
            format!("cannot run ffmpeg: {e}")
        }
    })?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = err.lines().rev().take(8).collect();
        return Err(format!("ffmpeg failed ({}) making the sample stream:\n{}", out.status, tail.join("\n")));
    }
    Ok(())
}

/// The playlists have what browsers need, and every segment is there.
fn check(dir: &Path) -> Result<(), String> {
    let read = |name: &str| std::fs::read_to_string(dir.join(name)).map_err(|e| format!("ffmpeg wrote no {name}: {e}"));
    let master = read("master.m3u8")?;
    for want in ["CODECS=\"avc1.", "mp4a.40.2", "RESOLUTION=", "BANDWIDTH=", "#EXT-X-MEDIA:TYPE=AUDIO"] {
        if !master.contains(want) {
            return Err(format!(
                "this ffmpeg writes no {want} in master.m3u8; a newer ffmpeg (5.1 or later) is needed"
            ));
        }
    }
    let mpd = read("manifest.mpd")?;
    if !mpd.contains("<SegmentTemplate") {
        return Err("manifest.mpd has no SegmentTemplate".into());
    }
    let per_track = (DURATION_SECS / SEGMENT_SECS) as usize;
    let segments = std::fs::read_dir(dir)
        .map_err(|e| e.to_string())?
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with("seg-"))
        .count();
    if segments < per_track * (RENDITIONS.len() + 1) {
        return Err(format!("ffmpeg wrote {segments} segments, expected {}", per_track * (RENDITIONS.len() + 1)));
    }
    Ok(())
}
