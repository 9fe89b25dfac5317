//! Media made with ffmpeg for the end-to-end tests: a small HLS tree, a small
//! DASH presentation, and playing a URL through ffmpeg as a real player would.

use std::path::Path;
use std::process::Command;

/// A small HLS tree under `root/vod/abc/`: `master.m3u8` with two variants
/// (`v1/`, `v2/`), each three 1-second MPEG-TS segments, made with ffmpeg's test source.
pub fn make_hls(root: &Path) {
    let base = root.join("vod/abc");
    for (name, size, rate) in [("v1", "160x120", "150k"), ("v2", "320x240", "300k")] {
        let dir = base.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let status = Command::new("ffmpeg")
            .args(["-v", "error", "-y", "-f", "lavfi", "-i"])
            .arg(format!("testsrc=duration=3:size={size}:rate=10"))
            .args(["-c:v", "mpeg2video", "-b:v", rate, "-g", "10", "-f", "hls", "-hls_time", "1"])
            .args(["-hls_list_size", "0", "-hls_playlist_type", "vod", "-hls_segment_filename"])
            .arg(dir.join("seg%d.ts"))
            .arg(dir.join("index.m3u8"))
            .status()
            .expect("ffmpeg is installed");
        assert!(status.success(), "ffmpeg failed for {name}");
    }
    std::fs::write(
        base.join("master.m3u8"),
        "#EXTM3U\n#EXT-X-VERSION:3\n\
         #EXT-X-STREAM-INF:BANDWIDTH=200000,RESOLUTION=160x120\nv1/index.m3u8\n\
         #EXT-X-STREAM-INF:BANDWIDTH=400000,RESOLUTION=320x240\nv2/index.m3u8\n",
    )
    .unwrap();
}

/// A small DASH presentation under `root/vod/abc/dash/`: `manifest.mpd` with two H.264
/// representations and one AAC one, three 1-second fMP4 segments each (SegmentTemplate).
pub fn make_dash(root: &Path) {
    let dir = root.join("vod/abc/dash");
    std::fs::create_dir_all(&dir).unwrap();
    let status = Command::new("ffmpeg")
        .args(["-v", "error", "-y", "-nostdin", "-f", "lavfi", "-i", "testsrc=duration=3:size=160x90:rate=10"])
        .args(["-f", "lavfi", "-i", "sine=duration=3:sample_rate=44100"])
        .args(["-map", "0:v", "-map", "0:v", "-map", "1:a", "-c:v", "libx264", "-preset", "ultrafast"])
        .args(["-b:v:0", "100k", "-b:v:1", "50k", "-g", "10", "-c:a", "aac", "-b:a", "32k"])
        .args(["-f", "dash", "-seg_duration", "1", "-use_template", "1", "-use_timeline", "0"])
        .args(["-adaptation_sets", "id=0,streams=v id=1,streams=a"])
        .args([
            "-init_seg_name",
            "init-$RepresentationID$.m4s",
            "-media_seg_name",
            "seg-$RepresentationID$-$Number$.m4s",
        ])
        .arg(dir.join("manifest.mpd"))
        .status()
        .expect("ffmpeg is installed");
    assert!(status.success(), "ffmpeg failed to write the DASH sample");
}

/// Plays `url` with ffmpeg (every stream, no output); returns ffmpeg's stderr on failure.
pub fn ffmpeg_play(url: &str, extra: &[&str]) -> Result<(), String> {
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-nostdin"])
        .args(extra)
        .args(["-i", url, "-map", "0", "-c", "copy", "-f", "null", "-"])
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() { Ok(()) } else { Err(String::from_utf8_lossy(&out.stderr).into_owned()) }
}
