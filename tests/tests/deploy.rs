//! `deploy/` and the operations docs cannot rot: every example configuration (files,
//! Kubernetes ConfigMaps, compose, marked snippets in `docs/`) is loaded by the real
//! config loaders; manifests parse as YAML with the expected kinds and consistent
//! references; the systemd units, the Dockerfile and the compose file agree with the
//! configs; the Prometheus rules pass `promtool check rules` and their unit tests; and
//! every metric and label the alerts and the Grafana dashboard use exists in the code.
//!
//! `promtool` comes with Debian's `prometheus` package (`scripts/install-deps`). Under
//! `CI=true` a missing `promtool` fails the suite; elsewhere those checks are skipped
//! with a message.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use stile_control::Config as ControlConfig;
use stile_edge::EdgeConfig;
use yaml_rust2::{Yaml, YamlLoader};

// ------------------------------------------------------------------ configs

#[test]
fn example_config_files_load() {
    for rel in ["deploy/config/edge.toml", "deploy/compose/edge.toml"] {
        edge_config(&read(rel), rel);
    }
    for rel in ["deploy/config/control.toml", "deploy/compose/control.toml"] {
        control_config(&read(rel), rel);
    }
}

/// Blocks in Markdown marked `<!-- check: edge -->` / `<!-- check: control -->` (a whole
/// file) or `<!-- check: edge fragment -->` (merged over `deploy/config/edge.toml`) just
/// before a fenced `toml` block are loaded like the files.
#[test]
fn marked_config_snippets_in_docs_load() {
    let mut checked = 0;
    let mut docs: Vec<PathBuf> = Vec::new();
    for dir in ["docs", "deploy"] {
        collect_files(&root().join(dir), &mut |p| p.extension().is_some_and(|e| e == "md"), &mut docs);
    }
    for path in docs {
        let text = std::fs::read_to_string(&path).unwrap();
        let name = path.strip_prefix(root()).unwrap().display().to_string();
        let lines: Vec<&str> = text.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            let Some(marker) = line.trim().strip_prefix("<!-- check:").and_then(|m| m.strip_suffix("-->")) else {
                continue;
            };
            let words: Vec<&str> = marker.split_whitespace().collect();
            assert_eq!(
                lines.get(i + 1).map(|l| l.trim()),
                Some("```toml"),
                "{name}:{}: marker not before ```toml",
                i + 1
            );
            let body: Vec<&str> = lines[i + 2..].iter().take_while(|l| l.trim() != "```").copied().collect();
            let mut snippet = body.join("\n");
            let what = format!("{name}:{}", i + 1);
            let component = words.first().copied().unwrap_or_default();
            if words.get(1) == Some(&"fragment") {
                let base = read(&format!("deploy/config/{component}.toml"));
                snippet = merge_toml(&base, &snippet, &what);
            }
            match component {
                "edge" => drop(edge_config(&snippet, &what)),
                "control" => drop(control_config(&snippet, &what)),
                other => panic!("{what}: unknown component {other:?} in the check marker"),
            }
            checked += 1;
        }
    }
    assert!(checked >= 1, "docs/operations.md has marked config snippets; none were found");
}

// --------------------------------------------------------------- kubernetes

#[test]
fn kubernetes_manifests_parse_with_the_expected_kinds() {
    let objects = kubernetes_objects();
    let kinds: BTreeMap<String, usize> = objects.iter().fold(BTreeMap::new(), |mut m, (_, o)| {
        *m.entry(str_of(&o["kind"]).to_owned()).or_default() += 1;
        m
    });
    for (kind, at_least) in [
        ("Namespace", 1),
        ("ConfigMap", 3),
        ("Secret", 2),
        ("Service", 3),
        ("Deployment", 2),
        ("StatefulSet", 1),
        ("PodDisruptionBudget", 2),
        ("NetworkPolicy", 1),
    ] {
        assert!(kinds.get(kind).copied().unwrap_or(0) >= at_least, "want {at_least}+ {kind}, have {kinds:?}");
    }
    for (file, o) in &objects {
        assert!(!str_of(&o["apiVersion"]).is_empty(), "{file}: object without apiVersion");
        assert!(!str_of(&o["metadata"]["name"]).is_empty(), "{file}: {} without a name", str_of(&o["kind"]));
    }
    // The kustomization lists exactly the manifests.
    let kustomization = &yaml(&read("deploy/kubernetes/kustomization.yaml"))[0];
    let listed: BTreeSet<&str> = kustomization["resources"].as_vec().unwrap().iter().map(str_of).collect();
    let files: BTreeSet<&str> = objects.iter().map(|(f, _)| f.as_str()).collect();
    assert_eq!(listed, files, "kustomization.yaml resources vs deploy/kubernetes/*.yaml");
}

#[test]
fn kubernetes_workloads_are_hardened_probed_and_consistent() {
    let objects = kubernetes_objects();
    let find = |kind: &str, name: &str| {
        objects
            .iter()
            .map(|(_, o)| o)
            .find(|o| str_of(&o["kind"]) == kind && str_of(&o["metadata"]["name"]) == name)
            .unwrap_or_else(|| panic!("no {kind} {name}"))
    };
    let config_maps: BTreeMap<&str, &Yaml> = objects
        .iter()
        .filter(|(_, o)| str_of(&o["kind"]) == "ConfigMap")
        .map(|(_, o)| (str_of(&o["metadata"]["name"]), &o["data"]))
        .collect();
    let secrets: BTreeMap<&str, &Yaml> = objects
        .iter()
        .filter(|(_, o)| str_of(&o["kind"]) == "Secret")
        .map(|(_, o)| (str_of(&o["metadata"]["name"]), &o["stringData"]))
        .collect();

    // Configs in ConfigMaps load.
    let edge = edge_config(str_of(&config_maps["stile-edge"]["edge.toml"]), "ConfigMap stile-edge");
    let control = control_config(str_of(&config_maps["stile-control"]["control.toml"]), "ConfigMap stile-control");
    let redis_conf = str_of(&config_maps["stile-redis"]["redis.conf"]);
    for line in ["appendonly yes", "appendfsync always", "maxmemory-policy noeviction"] {
        assert!(redis_conf.lines().any(|l| l.trim() == line), "redis.conf lacks {line:?}");
    }
    assert!(control.store.redis.url.contains("REDIS_PASSWORD_FROM_SECRET"), "the init container substitutes it");

    for (_, o) in &objects {
        let kind = str_of(&o["kind"]);
        if !matches!(kind, "Deployment" | "StatefulSet" | "DaemonSet") {
            continue;
        }
        let name = str_of(&o["metadata"]["name"]);
        let pod = &o["spec"]["template"]["spec"];
        let labels = &o["spec"]["template"]["metadata"]["labels"];
        for (k, v) in o["spec"]["selector"]["matchLabels"].as_hash().unwrap() {
            assert_eq!(&labels[str_of(k)], v, "{name}: selector vs pod labels");
        }
        assert_eq!(pod["securityContext"]["runAsNonRoot"].as_bool(), Some(true), "{name}: runAsNonRoot");
        assert_eq!(str_of(&pod["securityContext"]["seccompProfile"]["type"]), "RuntimeDefault", "{name}");
        let mut containers = pod["containers"].as_vec().unwrap().clone();
        containers.extend(pod["initContainers"].as_vec().cloned().unwrap_or_default());
        for c in &containers {
            let cname = format!("{name}/{}", str_of(&c["name"]));
            let r = &c["resources"];
            assert!(!r["requests"]["cpu"].is_badvalue() && !r["requests"]["memory"].is_badvalue(), "{cname}: requests");
            assert!(!r["limits"]["memory"].is_badvalue(), "{cname}: memory limit");
            let sc = &c["securityContext"];
            assert_eq!(sc["allowPrivilegeEscalation"].as_bool(), Some(false), "{cname}");
            assert_eq!(sc["readOnlyRootFilesystem"].as_bool(), Some(true), "{cname}");
            assert_eq!(sc["capabilities"]["drop"][0].as_str(), Some("ALL"), "{cname}");
            for e in c["env"].as_vec().cloned().unwrap_or_default() {
                let r = &e["valueFrom"]["secretKeyRef"];
                if !r.is_badvalue() {
                    let s =
                        secrets.get(str_of(&r["name"])).unwrap_or_else(|| panic!("{cname}: no Secret {:?}", r["name"]));
                    assert!(!s[str_of(&r["key"])].is_badvalue(), "{cname}: Secret lacks key {:?}", r["key"]);
                }
            }
        }
        // Volumes name existing ConfigMaps, Secrets (with the keys used) and claims.
        for v in pod["volumes"].as_vec().cloned().unwrap_or_default() {
            if let Some(cm) = v["configMap"]["name"].as_str() {
                assert!(config_maps.contains_key(cm), "{name}: no ConfigMap {cm}");
            }
            if let Some(s) = v["secret"]["secretName"].as_str() {
                let data = secrets.get(s).unwrap_or_else(|| panic!("{name}: no Secret {s}"));
                for item in v["secret"]["items"].as_vec().cloned().unwrap_or_default() {
                    assert!(!data[str_of(&item["key"])].is_badvalue(), "{name}: Secret {s} lacks {:?}", item["key"]);
                }
            }
            if let Some(claim) = v["persistentVolumeClaim"]["claimName"].as_str() {
                find("PersistentVolumeClaim", claim);
            }
        }
        // Every PDB and Service selecting these pods exists for the stile workloads.
        if name.starts_with("stile-") && kind == "Deployment" {
            let pdb = find("PodDisruptionBudget", name);
            for (k, v) in pdb["spec"]["selector"]["matchLabels"].as_hash().unwrap() {
                assert_eq!(&labels[str_of(k)], v, "{name}: PDB selector");
            }
        }
        let svc = find("Service", name);
        for (k, v) in svc["spec"]["selector"].as_hash().unwrap() {
            assert_eq!(&labels[str_of(k)], v, "{name}: Service selector");
        }
        let ports = container_ports(&pod["containers"][0]);
        for p in svc["spec"]["ports"].as_vec().unwrap() {
            let target = str_of(&p["targetPort"]);
            assert!(ports.contains_key(target), "{name}: Service targetPort {target} is no container port");
        }
    }

    // The edge: probes on the admin listener, ports from its config, drain time.
    let edge_deploy = find("Deployment", "stile-edge");
    let pod = &edge_deploy["spec"]["template"]["spec"];
    let c = &pod["containers"][0];
    let ports = container_ports(c);
    assert_eq!(port_of(&edge.admin_listen), ports["admin"], "edge admin_listen vs container port");
    assert_eq!(port_of(&edge.listen[0]), ports["http"], "edge listen vs container port");
    assert!(edge.admin_listen.starts_with("0.0.0.0:"), "kubelet probes the pod IP");
    check_probe(c, "readinessProbe", "/readyz", "admin");
    check_probe(c, "livenessProbe", "/healthz", "admin");
    assert_eq!(str_of(&c["args"][0]), "edge");
    assert_eq!(str_of(&c["args"][2]), "/etc/stile/edge.toml");
    let sync = edge.sync.as_ref().expect("the Kubernetes edges follow the control plane ([sync])");
    assert!(sync.api_key_file.starts_with("/etc/stile/secrets"), "the key comes from the mounted Secret");
    let pre_stop: u64 = str_of(&c["lifecycle"]["preStop"]["exec"]["command"][1]).parse().unwrap();
    let drain = pre_stop + edge.grace_period_secs + edge.graceful_shutdown_timeout_secs;
    let termination = pod["terminationGracePeriodSeconds"].as_i64().unwrap() as u64;
    assert!(termination > drain, "terminationGracePeriodSeconds {termination} <= preStop + grace + shutdown {drain}");

    // The control plane: probes on its admin listener, gRPC port from its config.
    let control_deploy = find("Deployment", "stile-control");
    let c = &control_deploy["spec"]["template"]["spec"]["containers"][0];
    let ports = container_ports(c);
    assert_eq!(control.listen.port(), ports["grpc"], "control listen vs container port");
    assert_eq!(port_of(&control.admin_listen), ports["admin"], "control admin_listen vs container port");
    assert!(control.admin_listen.starts_with("0.0.0.0:"), "kubelet probes the pod IP");
    check_probe(c, "readinessProbe", "/readyz", "admin");
    check_probe(c, "livenessProbe", "/healthz", "admin");
    assert_eq!(str_of(&control_deploy["spec"]["template"]["metadata"]["annotations"]["prometheus.io/port"]), "7401");
    assert_eq!(str_of(&edge_deploy["spec"]["template"]["metadata"]["annotations"]["prometheus.io/port"]), "9180");
}

// ------------------------------------------------------------------ compose

#[test]
fn compose_fleet_is_complete_and_its_files_exist() {
    let dir = root().join("deploy/compose");
    let doc = &yaml(&read("deploy/compose/compose.yaml"))[0];
    let services = doc["services"].as_hash().unwrap();
    let names: BTreeSet<&str> = services.keys().map(str_of).collect();
    for want in ["origin", "redis", "control", "prometheus", "grafana"] {
        assert!(names.contains(want), "compose lacks service {want}: {names:?}");
    }
    let edges: Vec<&str> = names.iter().copied().filter(|n| n.starts_with("edge-")).collect();
    assert!((2..=3).contains(&edges.len()), "2-3 edges, have {edges:?}");
    for (name, svc) in services {
        let svc = merged(svc);
        let name = str_of(name);
        assert!(!svc["image"].is_badvalue(), "{name}: image");
        for v in svc["volumes"].as_vec().cloned().unwrap_or_default() {
            let host = str_of(&v).split(':').next().unwrap();
            if host.starts_with('.') {
                assert!(dir.join(host).exists(), "{name}: volume source {host} does not exist");
            }
        }
    }
    let build = &doc["services"]["control"]["build"];
    assert!(dir.join(str_of(&build["context"])).join(str_of(&build["dockerfile"])).is_file(), "control build");
    for (name, s) in doc["secrets"].as_hash().unwrap() {
        assert!(dir.join(str_of(&s["file"])).is_file(), "secret {name:?}");
    }
    // The edges' key in secrets/ authenticates with role edge, the healthcheck's as admin.
    let control = control_config(&read("deploy/compose/control.toml"), "deploy/compose/control.toml");
    let role_of = |key: &str| {
        let hash: String = stile_control::auth::hash_api_key(key.trim()).iter().map(|b| format!("{b:02x}")).collect();
        control.auth.keys.iter().find(|k| k.sha256 == hash).map(|k| format!("{:?}", k.role).to_lowercase())
    };
    assert_eq!(role_of(&read("deploy/compose/secrets/edge-api-key")).as_deref(), Some("edge"));
    let health = doc["services"]["control"]["healthcheck"]["test"].as_vec().unwrap();
    let key = health.iter().skip_while(|a| str_of(a) != "--api-key").nth(1).map(str_of).unwrap();
    assert_eq!(role_of(key).as_deref(), Some("admin"));
    let edge = edge_config(&read("deploy/compose/edge.toml"), "deploy/compose/edge.toml");
    let sync = edge.sync.expect("compose edges follow the control plane");
    assert_eq!(sync.api_key_file, Path::new("/run/secrets/edge-api-key"));
    assert!(sync.endpoints.iter().all(|e| e.contains("//control:")), "{:?}", sync.endpoints);
}

// ------------------------------------------------------------------ systemd

#[test]
fn systemd_units_are_sandboxed_and_agree_with_the_configs() {
    let edge = edge_config(&read("deploy/config/edge.toml"), "deploy/config/edge.toml");
    let control = control_config(&read("deploy/config/control.toml"), "deploy/config/control.toml");
    let eu = unit(&read("deploy/systemd/stile-edge@.service"));
    let cu = unit(&read("deploy/systemd/stile-control.service"));
    for (name, u) in [("edge", &eu), ("control", &cu)] {
        for (key, want) in [
            ("User", "stile"),
            ("ProtectSystem", "strict"),
            ("ProtectHome", "yes"),
            ("PrivateTmp", "yes"),
            ("NoNewPrivileges", "yes"),
            ("Restart", "on-failure"),
            ("KillSignal", "SIGTERM"),
            ("RestartPreventExitStatus", "64"),
        ] {
            assert_eq!(u.one(key), want, "{name}: {key}");
        }
        assert!(u.one("LimitNOFILE").parse::<u64>().unwrap() >= 65536, "{name}: LimitNOFILE");
    }
    // The edge: only CAP_NET_BIND_SERVICE, and only because it binds a port below 1024.
    assert_eq!(eu.one("CapabilityBoundingSet"), "CAP_NET_BIND_SERVICE");
    assert_eq!(eu.one("AmbientCapabilities"), "CAP_NET_BIND_SERVICE");
    assert!(edge.listen.iter().any(|l| port_of(l) < 1024), "the capability is there for :80/:443");
    assert_eq!(cu.one("CapabilityBoundingSet"), "", "the control plane needs no capability");
    assert!(control.listen.port() >= 1024);
    assert_eq!(eu.one("ExecReload"), "/bin/kill -HUP $MAINPID", "reload = state reload (SIGHUP)");
    assert!(eu.one("ExecStart").contains("edge --config /etc/stile/edge.toml $STILE_EDGE_FLAGS"));
    assert!(cu.one("ExecStart").ends_with("control --config /etc/stile/control.toml"));
    // Stop time covers the drain.
    let stop = |u: &Unit| u.one("TimeoutStopSec").parse::<u64>().unwrap();
    assert!(
        stop(&eu) > edge.grace_period_secs + edge.graceful_shutdown_timeout_secs + 5,
        "TimeoutStopSec must cover grace_period_secs + graceful_shutdown_timeout_secs"
    );
    assert!(stop(&cu) * 1000 > control.sync.revoke_wait_max_ms, "a Revoke --wait in flight may take this long");
    // Files the services write are inside their writable paths; the blue/green pair
    // share the upgrade socket, outside PrivateTmp.
    let writable = |u: &Unit, p: &Path| {
        u.all("ReadWritePaths").iter().flat_map(|v| v.split_whitespace()).any(|w| p.starts_with(w))
    };
    assert!(writable(&eu, edge.state.file.parent().unwrap()), "edge state.file {:?}", edge.state.file);
    for p in [&edge.pid_file, &edge.upgrade_sock] {
        assert!(p.starts_with("/run/stile-edge/"), "{p} must be in RuntimeDirectory=stile-edge");
    }
    assert_eq!(eu.one("RuntimeDirectory"), "stile-edge");
    assert_eq!(eu.one("RuntimeDirectoryPreserve"), "yes", "blue and green share /run/stile-edge");
    assert!(writable(&cu, control.store.path.parent().unwrap()), "store.path {:?}", control.store.path);
    let script = read("deploy/systemd/stile-edge-upgrade");
    assert!(script.contains("STILE_EDGE_FLAGS=--upgrade") && script.contains("--signal=SIGQUIT"));
    assert!(eu.one("EnvironmentFile").starts_with("-/run/stile-edge/%i.env"));

    let out = Command::new("bash").arg("-n").arg(root().join("deploy/systemd/stile-edge-upgrade")).output().unwrap();
    assert!(out.status.success(), "bash -n: {}", String::from_utf8_lossy(&out.stderr));
    if let Some(shellcheck) = tool("shellcheck", true) {
        let out = Command::new(shellcheck).arg(root().join("deploy/systemd/stile-edge-upgrade")).output().unwrap();
        assert!(out.status.success(), "shellcheck:\n{}", String::from_utf8_lossy(&out.stdout));
    }
}

/// `systemd-analyze verify` knows every directive and value; the units are copied with
/// ExecStart pointing at an existing binary, as the real path need not exist here.
#[test]
fn systemd_analyze_accepts_the_units() {
    let Some(analyze) = tool("systemd-analyze", true) else { return };
    let dir = tempfile::tempdir().unwrap();
    let mut units = Vec::new();
    for (src, dst) in
        [("stile-control.service", "stile-control.service"), ("stile-edge@.service", "stile-edge@blue.service")]
    {
        let text = read(&format!("deploy/systemd/{src}")).replace("/usr/local/bin/stile", "/bin/true");
        std::fs::write(dir.path().join(dst), text).unwrap();
        units.push(dir.path().join(dst));
    }
    let out = Command::new(analyze).args(["verify", "--man=no"]).args(&units).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let complaints: Vec<&str> = text.lines().filter(|l| l.contains(".service")).collect();
    assert!(out.status.success() && complaints.is_empty(), "systemd-analyze verify:\n{text}");
}

// --------------------------------------------------------------- Dockerfile

#[test]
fn dockerfile_builds_the_binary_with_the_pinned_toolchain_and_runs_as_non_root() {
    let text = read("deploy/docker/Dockerfile");
    let froms: Vec<&str> = text.lines().filter(|l| l.starts_with("FROM ")).collect();
    assert_eq!(froms.len(), 2, "a builder and a runtime stage: {froms:?}");
    let toolchain: toml::Value = toml::from_str(&read("rust-toolchain.toml")).unwrap();
    let channel = toolchain["toolchain"]["channel"].as_str().unwrap();
    let minor = channel.rsplit_once('.').map_or(channel, |(mm, _)| mm);
    assert!(froms[0].starts_with(&format!("FROM rust:{minor}-")) && froms[0].ends_with(" AS builder"), "{}", froms[0]);
    assert!(froms[1].starts_with("FROM debian:") && froms[1].contains("-slim"), "{}", froms[1]);
    let release =
        |f: &str| f.split([':', '-', ' ']).find(|w| ["bookworm", "trixie", "forky"].contains(w)).map(str::to_owned);
    assert!(
        release(froms[0]).is_some() && release(froms[0]) == release(froms[1]),
        "same Debian release: glibc must match"
    );
    for want in ["cmake", "protobuf-compiler", "--locked -p stile-cli --bin stile", "COPY --from=builder"] {
        assert!(text.contains(want), "Dockerfile lacks {want:?}");
    }
    let user = text.lines().rev().find_map(|l| l.strip_prefix("USER ")).expect("USER in the runtime stage");
    assert!(!user.starts_with("root") && !user.starts_with("0"), "runs as {user}");
    assert!(text.contains(r#"ENTRYPOINT ["/usr/local/bin/stile"]"#));
    let exposed: BTreeSet<u16> = text
        .lines()
        .filter_map(|l| l.strip_prefix("EXPOSE "))
        .flat_map(|l| l.split_whitespace().map(|p| p.parse::<u16>().unwrap()))
        .collect();
    assert_eq!(exposed, BTreeSet::from([8080, 9180, 7400, 7401]));
    for line in text.lines().filter(|l| l.starts_with("COPY ") && !l.contains("--from")) {
        for src in line.split_whitespace().skip(1).collect::<Vec<_>>().split_last().unwrap().1 {
            if *src != "." {
                assert!(root().join(src).exists(), "COPY source {src} does not exist");
            }
        }
    }
    assert!(root().join("deploy/docker/Dockerfile.dockerignore").is_file());
}

// --------------------------------------------------- Prometheus and Grafana

#[test]
fn alert_rules_pass_promtool_and_their_unit_tests() {
    let Some(promtool) = tool("promtool", true) else { return };
    let dir = root().join("deploy/prometheus");
    for args in [
        &["check", "rules", "stile-alerts.yml"][..],
        &["test", "rules", "stile-alerts.test.yml"],
        &["check", "config", "prometheus.yml"],
    ] {
        let out = Command::new(&promtool).args(args).current_dir(&dir).output().unwrap();
        assert!(
            out.status.success(),
            "promtool {}:\n{}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // The compose Prometheus loads the same rules from its mount.
    let tmp = tempfile::tempdir().unwrap();
    std::fs::copy(root().join("deploy/compose/prometheus.yml"), tmp.path().join("prometheus.yml")).unwrap();
    std::fs::copy(dir.join("stile-alerts.yml"), tmp.path().join("stile-alerts.yml")).unwrap();
    let out =
        Command::new(&promtool).args(["check", "config", "prometheus.yml"]).current_dir(tmp.path()).output().unwrap();
    assert!(out.status.success(), "compose prometheus.yml: {}", String::from_utf8_lossy(&out.stdout));
}

#[test]
fn alerts_link_to_existing_runbook_sections() {
    let ops = read("docs/operations.md");
    let anchors: BTreeSet<String> = ops.lines().filter_map(|l| l.strip_prefix("## ")).map(anchor).collect();
    let rules = alert_rules();
    assert!(rules.len() >= 10, "{} rules", rules.len());
    let names: BTreeSet<&str> = rules.iter().map(|r| str_of(&r["alert"])).collect();
    for want in [
        "StileEdgeDenialSpike",
        "StileEdgeUpstreamErrors",
        "StileEdgeSyncLag",
        "StileEdgeStateStale",
        "StileEdgeClockSkew",
        "StileKeyRolloutStuck",
        "StileControlPlaneDown",
        "StileNoEdgesConnected",
    ] {
        assert!(names.contains(want), "no alert {want}");
    }
    for r in &rules {
        let name = str_of(&r["alert"]);
        assert!(["warning", "critical"].contains(&str_of(&r["labels"]["severity"])), "{name}: severity");
        assert!(!str_of(&r["annotations"]["summary"]).is_empty(), "{name}: summary");
        let runbook = str_of(&r["annotations"]["runbook"]);
        let section =
            runbook.strip_prefix("docs/operations.md#").unwrap_or_else(|| panic!("{name}: runbook {runbook:?}"));
        assert!(anchors.contains(section), "{name}: no section #{section} in docs/operations.md (have {anchors:?})");
    }
}

#[test]
fn dashboard_parses_and_its_queries_are_valid_promql() {
    let dash: serde_json::Value = serde_json::from_str(&read("deploy/grafana/stile.json")).unwrap();
    assert_eq!(dash["uid"], "stile-overview");
    let vars: BTreeSet<&str> =
        dash["templating"]["list"].as_array().unwrap().iter().map(|v| v["name"].as_str().unwrap()).collect();
    let mut ids = BTreeSet::new();
    let mut titles = Vec::new();
    let exprs = dashboard_exprs(&dash);
    for p in dash["panels"].as_array().unwrap() {
        assert!(ids.insert(p["id"].as_u64().unwrap()), "duplicate panel id {}", p["id"]);
        titles.push(p["title"].as_str().unwrap().to_lowercase());
        // A panel type Grafana knows (a description put in `type` once made 14 panels unrenderable).
        let kind = p["type"].as_str().unwrap_or_default();
        assert!(
            ["row", "timeseries", "stat", "gauge", "table", "bargauge", "text"].contains(&kind),
            "{}: type {kind:?}",
            p["title"]
        );
        if p["type"] != "row" {
            assert_eq!(p["datasource"]["uid"], "${datasource}", "{}", p["title"]);
            assert!(!p["targets"].as_array().unwrap().is_empty(), "{}: no query", p["title"]);
        }
    }
    for want in [
        "playback starts",
        "denials by channel and reason",
        "latency",
        "sync lag",
        "skew",
        "revocation set",
        "upstream errors",
    ] {
        assert!(titles.iter().any(|t| t.contains(want)), "no panel about {want}: {titles:?}");
    }
    for e in &exprs {
        for var in e.split('$').skip(1) {
            let name: String = var.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
            assert!(name.starts_with("__") || vars.contains(name.as_str()), "undefined variable ${name} in {e}");
        }
    }
    // promtool parses each query as a recording rule, Grafana variables substituted.
    let Some(promtool) = tool("promtool", true) else { return };
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, e) in exprs.iter().enumerate() {
        let e = e
            .replace("$__rate_interval", "5m")
            .replace("$__interval", "1m")
            .replace("$edge_job", "stile-edge")
            .replace("$control_job", "stile-control")
            .replace("$instance", ".*")
            .replace("$channel", ".*");
        rules.push_str(&format!(
            "      - record: dashboard:q{i}\n        expr: {}\n",
            serde_json::to_string(&e).unwrap()
        ));
    }
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("dashboard.yml"), rules).unwrap();
    let out =
        Command::new(promtool).args(["check", "rules", "dashboard.yml"]).current_dir(tmp.path()).output().unwrap();
    assert!(
        out.status.success(),
        "dashboard PromQL:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every `stile_*` metric and every label the alerts and the dashboard use is a string
/// in the Rust sources (where metrics are registered), so a rename breaks this test
/// rather than an alert silently never firing.
#[test]
fn metrics_and_labels_used_by_alerts_and_dashboard_exist_in_the_code() {
    let mut sources = String::new();
    let mut files = Vec::new();
    collect_files(
        &root().join("crates"),
        &mut |p| p.extension().is_some_and(|e| e == "rs") && p.components().any(|c| c.as_os_str() == "src"),
        &mut files,
    );
    for f in files {
        sources.push_str(&std::fs::read_to_string(f).unwrap());
    }
    let mut exprs: Vec<(String, String)> = alert_rules()
        .iter()
        .map(|r| (format!("alert {}", str_of(&r["alert"])), str_of(&r["expr"]).to_owned()))
        .collect();
    let dash: serde_json::Value = serde_json::from_str(&read("deploy/grafana/stile.json")).unwrap();
    exprs.extend(dashboard_exprs(&dash).into_iter().map(|e| ("dashboard".to_owned(), e)));
    let mut metrics = BTreeSet::new();
    for (whence, e) in &exprs {
        for (metric, labels) in promql_names(e) {
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| metric.strip_suffix(s).filter(|b| sources.contains(&format!("\"{b}\""))))
                .unwrap_or(&metric)
                .to_owned();
            if base != "up" {
                assert!(
                    sources.contains(&format!("\"{base}\"")),
                    "{whence}: metric {base} is not registered anywhere in crates/*/src"
                );
                metrics.insert(base);
            }
            for l in labels {
                if !["job", "instance", "le", "__name__"].contains(&l.as_str()) {
                    assert!(
                        sources.contains(&format!("\"{l}\"")),
                        "{whence}: label {l} (of {metric}) is not in crates/*/src"
                    );
                }
            }
        }
    }
    for want in [
        "stile_edge_requests_total",
        "stile_control_edges_connected",
        "stile_edge_state_age_seconds",
        // The cache panels: hit ratio and origin offload.
        "stile_edge_cache_lookups_total",
        "stile_edge_cache_served_bytes_total",
    ] {
        assert!(metrics.contains(want), "{want} is used somewhere");
    }
}

// ------------------------------------------------------------------ helpers

fn root() -> PathBuf {
    stile_tests::repo_root()
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn edge_config(text: &str, what: &str) -> EdgeConfig {
    let c: EdgeConfig = toml::from_str(text).unwrap_or_else(|e| panic!("{what}: not an edge config: {e}"));
    c.validate().unwrap_or_else(|e| panic!("{what}: {e}"));
    c
}

fn control_config(text: &str, what: &str) -> ControlConfig {
    ControlConfig::from_toml(text).unwrap_or_else(|e| panic!("{what}: {e}"))
}

/// `base` with the tables of `fragment` merged over it.
fn merge_toml(base: &str, fragment: &str, what: &str) -> String {
    fn merge(into: &mut toml::Table, from: toml::Table) {
        for (k, v) in from {
            match (into.get_mut(&k), v) {
                (Some(toml::Value::Table(a)), toml::Value::Table(b)) => merge(a, b),
                (_, v) => {
                    into.insert(k, v);
                }
            }
        }
    }
    let mut base: toml::Table = toml::from_str(base).unwrap();
    let fragment: toml::Table = toml::from_str(fragment).unwrap_or_else(|e| panic!("{what}: {e}"));
    merge(&mut base, fragment);
    toml::to_string(&base).unwrap()
}

fn collect_files(dir: &Path, want: &mut dyn FnMut(&Path) -> bool, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            collect_files(&p, want, out);
        } else if want(&p) {
            out.push(p);
        }
    }
}

/// A tool from PATH. `required_in_ci`: missing under `CI=true` fails the test; otherwise
/// it is skipped with a message.
fn tool(name: &str, required_in_ci: bool) -> Option<PathBuf> {
    let found = std::env::var_os("PATH")
        .and_then(|paths| std::env::split_paths(&paths).map(|d| d.join(name)).find(|p| p.is_file()));
    if found.is_none() {
        let ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0");
        assert!(!(required_in_ci && ci), "{name} is required under CI=true (scripts/install-deps installs it)");
        eprintln!("SKIPPED: {name} not on PATH (scripts/install-deps installs it); these checks did not run");
    }
    found
}

fn yaml(text: &str) -> Vec<Yaml> {
    YamlLoader::load_from_str(text).unwrap_or_else(|e| panic!("YAML: {e}"))
}

fn str_of(y: &Yaml) -> &str {
    y.as_str().unwrap_or_default()
}

/// Every object of every `deploy/kubernetes/*.yaml` but the kustomization, with its file name.
fn kubernetes_objects() -> Vec<(String, Yaml)> {
    let mut out = Vec::new();
    let mut files: Vec<PathBuf> = std::fs::read_dir(root().join("deploy/kubernetes"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml") && !p.ends_with("kustomization.yaml"))
        .collect();
    files.sort();
    for f in files {
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        for doc in yaml(&std::fs::read_to_string(&f).unwrap()) {
            assert!(!doc.is_null(), "{name}: empty document");
            out.push((name.clone(), doc));
        }
    }
    out
}

fn container_ports(c: &Yaml) -> BTreeMap<String, u16> {
    c["ports"]
        .as_vec()
        .unwrap()
        .iter()
        .map(|p| (str_of(&p["name"]).to_owned(), p["containerPort"].as_i64().unwrap() as u16))
        .collect()
}

fn check_probe(c: &Yaml, probe: &str, path: &str, port: &str) {
    let get = &c[probe]["httpGet"];
    assert_eq!(str_of(&get["path"]), path, "{probe}");
    assert_eq!(str_of(&get["port"]), port, "{probe}");
}

fn port_of(addr: &str) -> u16 {
    addr.rsplit_once(':').and_then(|(_, p)| p.parse().ok()).unwrap_or_else(|| panic!("no port in {addr:?}"))
}

/// A compose service with its `<<` merge key applied (yaml-rust2 resolves the alias,
/// not the YAML 1.1 merge).
fn merged(svc: &Yaml) -> Yaml {
    let mut out = yaml_rust2::yaml::Hash::new();
    if let Some(base) = svc["<<"].as_hash() {
        out.extend(base.clone());
    }
    for (k, v) in svc.as_hash().unwrap() {
        if str_of(k) != "<<" {
            out.insert(k.clone(), v.clone());
        }
    }
    Yaml::Hash(out)
}

/// A systemd unit: every `Key=Value` of every section.
struct Unit(Vec<(String, String)>);

impl Unit {
    fn all(&self, key: &str) -> Vec<&str> {
        self.0.iter().filter(|(k, _)| k == key).map(|(_, v)| v.as_str()).collect()
    }
    fn one(&self, key: &str) -> &str {
        let all = self.all(key);
        assert_eq!(all.len(), 1, "{key}: {all:?}");
        all[0]
    }
}

fn unit(text: &str) -> Unit {
    Unit(
        text.lines()
            .map(str::trim)
            .filter(|l| !l.starts_with('#') && !l.starts_with('['))
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
            .collect(),
    )
}

fn alert_rules() -> Vec<Yaml> {
    let doc = &yaml(&read("deploy/prometheus/stile-alerts.yml"))[0];
    doc["groups"].as_vec().unwrap().iter().flat_map(|g| g["rules"].as_vec().unwrap().clone()).collect()
}

fn dashboard_exprs(dash: &serde_json::Value) -> Vec<String> {
    let mut out = Vec::new();
    for p in dash["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().into_iter().flatten() {
            let e = t["expr"].as_str().unwrap_or_else(|| panic!("{}: target without expr", p["title"]));
            assert!(!e.trim().is_empty(), "{}: empty expr", p["title"]);
            out.push(e.to_owned());
        }
    }
    out
}

/// GitHub's anchor for a heading: lower case, spaces to `-`, punctuation dropped.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

/// The `stile_*`/`up` metrics of a PromQL expression, each with the label names used in
/// its selector and in the `by`/`without`/`on`/`ignoring` clauses of the expression.
fn promql_names(expr: &str) -> Vec<(String, Vec<String>)> {
    let b = expr.as_bytes();
    let ident = |i: usize| {
        let mut j = i;
        while j < b.len() && (b[j].is_ascii_alphanumeric() || b[j] == b'_') {
            j += 1;
        }
        j
    };
    // Labels in grouping clauses belong to the whole expression.
    let mut grouping = Vec::new();
    for kw in ["by", "without", "on", "ignoring"] {
        let mut from = 0;
        while let Some(at) = expr[from..].find(kw).map(|p| p + from) {
            from = at + kw.len();
            let before_ok = at == 0 || !(b[at - 1].is_ascii_alphanumeric() || b[at - 1] == b'_');
            let rest = expr[from..].trim_start();
            if before_ok && rest.starts_with('(') {
                let inner = &rest[1..rest.find(')').unwrap()];
                grouping.extend(inner.split(',').map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()));
            }
        }
    }
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let start = i;
        if b[i] == b'"' {
            // Skip string literals (label values, regexes).
            i += 1;
            while i < b.len() && b[i] != b'"' {
                i += if b[i] == b'\\' { 2 } else { 1 };
            }
            i += 1;
            continue;
        }
        if !(b[i].is_ascii_alphabetic() || b[i] == b'_')
            || (i > 0 && (b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_'))
        {
            i += 1;
            continue;
        }
        let end = ident(i);
        let name = &expr[start..end];
        i = end;
        if !(name.starts_with("stile_") || (name == "up" && b.get(end) == Some(&b'{'))) {
            continue;
        }
        let mut labels = grouping.clone();
        if b.get(end) == Some(&b'{') {
            let close = expr[end..].find('}').unwrap() + end;
            let mut in_str = false;
            let mut k = end + 1;
            while k < close {
                if b[k] == b'"' {
                    in_str = !in_str;
                    k += 1;
                } else if !in_str && (b[k].is_ascii_alphabetic() || b[k] == b'_') {
                    let e = ident(k);
                    labels.push(expr[k..e].to_owned());
                    k = e;
                } else {
                    k += 1;
                }
            }
            i = close + 1;
        }
        out.push((name.to_owned(), labels));
    }
    out
}
