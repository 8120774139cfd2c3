//! `cargo xtask inf-lint`: the `InfVerif` and primitive-driver rules that can be checked
//! without Windows. `InfVerif` (`/w /h`) on Windows remains the authority; this catches the
//! mistakes that would fail it, on every CI run.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::{self, Write as _};

/// The WFP callout class GUID (`WFPCALLOUTS`).
pub const WFP_CLASS_GUID: &str = "{57465043-616C-6C6F-7574-5F636C617373}";

/// One line of a section: `key = value`, or a bare value list.
#[derive(Clone, Debug)]
pub struct Entry {
    /// 1-based line number.
    pub line: usize,
    /// Lower-cased key, if the line has one.
    pub key: Option<String>,
    /// The value (or the whole line), comment stripped, trimmed.
    pub value: String,
}

/// A parsed INF: sections by lower-cased name, in file order.
#[derive(Debug, Default)]
pub struct Inf {
    /// Sections: lower-cased name -> (line of the header, original name, entries).
    pub sections: BTreeMap<String, (usize, String, Vec<Entry>)>,
}

fn strip_comment(line: &str) -> &str {
    let mut quoted = false;
    for (i, c) in line.char_indices() {
        match c {
            '"' => quoted = !quoted,
            ';' if !quoted => return &line[..i],
            _ => {}
        }
    }
    line
}

impl Inf {
    /// Parses INF text (section headers, `key = value` lines, value lines).
    #[must_use]
    pub fn parse(text: &str) -> Self {
        let mut inf = Self::default();
        let mut current: Option<String> = None;
        for (n, raw) in text.lines().enumerate() {
            let line = strip_comment(raw).trim();
            if line.is_empty() {
                continue;
            }
            if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                let key = name.trim().to_ascii_lowercase();
                inf.sections
                    .entry(key.clone())
                    .or_insert_with(|| (n + 1, name.trim().to_owned(), Vec::new()));
                current = Some(key);
                continue;
            }
            let Some(sec) = current.as_ref().and_then(|c| inf.sections.get_mut(c)) else {
                continue;
            };
            let (key, value) = match line.split_once('=') {
                Some((k, v)) if !k.contains(',') => {
                    (Some(k.trim().to_ascii_lowercase()), v.trim().to_owned())
                }
                _ => (None, line.to_owned()),
            };
            sec.2.push(Entry { line: n + 1, key, value });
        }
        inf
    }

    /// A section's entries.
    #[must_use]
    pub fn section(&self, name: &str) -> Option<&[Entry]> {
        self.sections.get(&name.to_ascii_lowercase()).map(|s| s.2.as_slice())
    }

    /// The value of `key` in section `name`.
    #[must_use]
    pub fn value(&self, name: &str, key: &str) -> Option<&Entry> {
        self.section(name)?.iter().find(|e| e.key.as_deref() == Some(&key.to_ascii_lowercase()))
    }
}

/// A rule broken by the INF.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    /// Line (0 when the problem is an absence).
    pub line: usize,
    /// Rule id.
    pub rule: &'static str,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "[{}] {}", self.rule, self.message)
        } else {
            write!(f, "line {}: [{}] {}", self.line, self.rule, self.message)
        }
    }
}

/// Whether the file is the `.inx` source (architecture `$ARCH$`, `DriverVer` placeholder) or a
/// stamped `.inf`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// The `.inx` source.
    Source,
    /// A stamped `.inf`.
    Stamped,
}

const ARCHES: [&str; 3] = ["ntamd64", "ntarm64", "nt$arch$"];

fn unquote(v: &str) -> &str {
    v.trim().trim_matches('"')
}

fn list(v: &str) -> impl Iterator<Item = &str> {
    v.split(',').map(str::trim).filter(|s| !s.is_empty())
}

fn valid_driver_ver(v: &str) -> bool {
    let Some((date, version)) = v.split_once(',') else { return false };
    let d: Vec<&str> = date.trim().split('/').collect();
    let date_ok = d.len() == 3
        && d.iter()
            .zip([2, 2, 4])
            .all(|(p, n)| p.len() == n && p.chars().all(|c| c.is_ascii_digit()))
        && d[0].parse::<u32>().is_ok_and(|m| (1..=12).contains(&m))
        && d[1].parse::<u32>().is_ok_and(|x| (1..=31).contains(&x));
    let parts: Vec<&str> = version.trim().split('.').collect();
    date_ok && parts.len() == 4 && parts.iter().all(|p| p.parse::<u16>().is_ok())
}

/// Checks the rules; returns every finding (empty: clean).
#[must_use]
#[allow(clippy::too_many_lines, reason = "one rule after another, in InfVerif's order")]
pub fn lint(text: &str, stage: Stage) -> Vec<Finding> {
    let inf = Inf::parse(text);
    let mut out = Vec::new();
    let mut bad = |line: usize, rule: &'static str, message: String| {
        out.push(Finding { line, rule, message });
    };

    // [Version]
    if inf.section("Version").is_none() {
        bad(0, "version", "[Version] section missing".into());
    } else {
        {
            let v = |k: &str| inf.value("Version", k);
            if v("Signature")
                .is_none_or(|e| !unquote(&e.value).eq_ignore_ascii_case("$WINDOWS NT$"))
            {
                bad(
                    v("Signature").map_or(0, |e| e.line),
                    "version",
                    "Signature must be \"$WINDOWS NT$\"".into(),
                );
            }
            match (v("Class"), v("ClassGuid")) {
                (Some(c), Some(g)) => {
                    if !c.value.eq_ignore_ascii_case("WFPCALLOUTS") {
                        bad(
                            c.line,
                            "class",
                            format!("Class is {}, a WFP callout driver uses WFPCALLOUTS", c.value),
                        );
                    }
                    if !g.value.eq_ignore_ascii_case(WFP_CLASS_GUID) {
                        bad(
                            g.line,
                            "class",
                            format!(
                                "ClassGuid {} does not match WFPCALLOUTS {WFP_CLASS_GUID}",
                                g.value
                            ),
                        );
                    }
                }
                _ => bad(0, "class", "Class and ClassGuid are required".into()),
            }
            if v("Provider").is_none() {
                bad(0, "version", "Provider missing".into());
            }
            if v("CatalogFile").is_none() {
                bad(0, "version", "CatalogFile missing (signed packages need a catalog)".into());
            }
            if v("PnpLockdown").is_none_or(|e| e.value != "1") {
                bad(
                    v("PnpLockdown").map_or(0, |e| e.line),
                    "pnplockdown",
                    "PnpLockdown = 1 is required".into(),
                );
            }
            match v("DriverVer") {
                None => bad(0, "driverver", "DriverVer missing".into()),
                Some(e) if stage == Stage::Stamped && !valid_driver_ver(&e.value) => {
                    bad(
                        e.line,
                        "driverver",
                        format!("DriverVer '{}' is not MM/DD/YYYY,w.x.y.z", e.value),
                    );
                }
                Some(_) => {}
            }
        }
    }

    // Primitive driver: no [Manufacturer], decorated DefaultInstall only.
    if let Some((line, _, _)) = inf.sections.get("manufacturer") {
        bad(*line, "primitive", "a primitive driver INF has no [Manufacturer] section".into());
    }
    for (name, (line, orig, _)) in &inf.sections {
        for base in ["defaultinstall", "defaultuninstall"] {
            if name == base || name.starts_with(&format!("{base}.services")) {
                bad(
                    *line,
                    "decoration",
                    format!("[{orig}] must be architecture-decorated (.NTamd64 / .NTarm64)"),
                );
            }
        }
        if let Some(arch) =
            name.strip_prefix("defaultinstall.").or_else(|| name.strip_prefix("defaultuninstall."))
        {
            let arch = arch.split('.').next().unwrap_or("");
            if !ARCHES.contains(&arch) || (stage == Stage::Stamped && arch == "nt$arch$") {
                bad(*line, "decoration", format!("[{orig}]: unknown architecture decoration"));
            }
        }
    }
    let installs: Vec<String> = inf
        .sections
        .keys()
        .filter(|k| k.starts_with("defaultinstall.") && k.matches('.').count() == 1)
        .cloned()
        .collect();
    if installs.is_empty() {
        bad(0, "decoration", "no [DefaultInstall.NT<arch>] section".into());
    }
    for i in &installs {
        let services = format!("{i}.services");
        if inf
            .section(&services)
            .is_none_or(|s| !s.iter().any(|e| e.key.as_deref() == Some("addservice")))
        {
            bad(0, "service", format!("[{services}] with an AddService directive is required"));
        }
    }
    for (name, (line, orig, entries)) in &inf.sections {
        if name.starts_with("defaultuninstall.") && name.matches('.').count() == 1 {
            let legacy = entries
                .iter()
                .any(|e| e.key.as_deref() == Some("legacyuninstall") && e.value == "1");
            if !legacy {
                bad(*line, "uninstall", format!("[{orig}] requires LegacyUninstall = 1"));
            }
        }
    }

    // [DestinationDirs]: everything to DIRID 13 (the driver store).
    match inf.section("DestinationDirs") {
        None => bad(0, "dirid", "[DestinationDirs] missing".into()),
        Some(entries) => {
            if !entries.iter().any(|e| e.key.as_deref() == Some("defaultdestdir")) {
                bad(0, "dirid", "DefaultDestDir missing".into());
            }
            for e in entries {
                if list(&e.value).next() != Some("13") {
                    bad(
                        e.line,
                        "dirid",
                        format!(
                            "destination {} must be DIRID 13 (run from the driver store)",
                            e.value
                        ),
                    );
                }
            }
        }
    }

    // Referenced sections exist; AddService install sections have the right values.
    for (name, (_, orig, entries)) in &inf.sections {
        for e in entries {
            let Some(key) = e.key.as_deref() else { continue };
            match key {
                "copyfiles" | "delfiles" | "addreg" | "delreg" => {
                    for target in list(&e.value).filter(|t| !t.starts_with('@')) {
                        if inf.section(target).is_none() {
                            bad(
                                e.line,
                                "section",
                                format!("[{orig}] {key} references undefined section [{target}]"),
                            );
                        }
                    }
                }
                "addservice" => {
                    let parts: Vec<&str> = e.value.split(',').map(str::trim).collect();
                    match parts.get(2).filter(|s| !s.is_empty()) {
                        None => bad(
                            e.line,
                            "service",
                            "AddService needs a service-install section".into(),
                        ),
                        Some(sec) => match inf.section(sec) {
                            None => bad(
                                e.line,
                                "section",
                                format!("AddService references undefined section [{sec}]"),
                            ),
                            Some(_) => check_service(&inf, sec, &mut bad),
                        },
                    }
                }
                _ => {}
            }
        }
        let _ = name;
    }

    // Every %string% defined.
    let strings: BTreeSet<String> =
        inf.section("Strings").unwrap_or(&[]).iter().filter_map(|e| e.key.clone()).collect();
    for (_, (_, _, entries)) in inf.sections.iter().filter(|(k, _)| k.as_str() != "strings") {
        for e in entries {
            let mut rest = e.value.as_str();
            while let Some(start) = rest.find('%') {
                let after = &rest[start + 1..];
                let Some(end) = after.find('%') else { break };
                let token = &after[..end];
                if !token.is_empty()
                    && !token.chars().all(|c| c.is_ascii_digit())
                    && !strings.contains(&token.to_ascii_lowercase())
                {
                    bad(e.line, "string", format!("%{token}% is not defined in [Strings]"));
                }
                rest = &after[end + 1..];
            }
        }
    }

    // Files copied are listed in [SourceDisksFiles], whose disks are in [SourceDisksNames].
    let disks: BTreeSet<String> = inf
        .section("SourceDisksNames")
        .unwrap_or(&[])
        .iter()
        .filter_map(|e| e.key.clone())
        .collect();
    let mut files = BTreeSet::new();
    for e in inf.section("SourceDisksFiles").unwrap_or(&[]) {
        if let Some(f) = &e.key {
            files.insert(f.clone());
            let disk = list(&e.value).next().unwrap_or("");
            if !disks.contains(disk) {
                bad(e.line, "files", format!("{f}: disk {disk} not in [SourceDisksNames]"));
            }
        }
    }
    for (_, _, entries) in inf.sections.values() {
        for e in entries.iter().filter(|e| e.key.as_deref() == Some("copyfiles")) {
            for target in list(&e.value) {
                let copied: Vec<String> = match target.strip_prefix('@') {
                    Some(f) => vec![f.to_ascii_lowercase()],
                    None => inf
                        .section(target)
                        .unwrap_or(&[])
                        .iter()
                        .filter_map(|x| list(&x.value).next().map(str::to_ascii_lowercase))
                        .collect(),
                };
                for f in copied {
                    if !files.contains(&f) {
                        bad(
                            e.line,
                            "files",
                            format!("{f} is copied but not listed in [SourceDisksFiles]"),
                        );
                    }
                }
            }
        }
    }
    out
}

fn check_service(inf: &Inf, sec: &str, bad: &mut impl FnMut(usize, &'static str, String)) {
    let v = |k: &str| inf.value(sec, k);
    let expect = |bad: &mut dyn FnMut(usize, &'static str, String),
                  k: &str,
                  ok: &dyn Fn(&str) -> bool,
                  why: &str| match v(k) {
        None => bad(0, "service", format!("[{sec}] {k} missing ({why})")),
        Some(e) if !ok(&e.value) => {
            bad(e.line, "service", format!("[{sec}] {k} = {} ({why})", e.value));
        }
        Some(_) => {}
    };
    expect(bad, "ServiceType", &|x| x == "1", "must be 1, SERVICE_KERNEL_DRIVER");
    expect(bad, "StartType", &|x| matches!(x, "0" | "1" | "2" | "3"), "must be 0-3");
    expect(bad, "ErrorControl", &|x| x == "1", "must be 1, SERVICE_ERROR_NORMAL");
    expect(bad, "LoadOrderGroup", &|x| x.eq_ignore_ascii_case("NDIS"), "must be NDIS");
    expect(
        bad,
        "ServiceBinary",
        &|x| x.starts_with("%13%\\"),
        "must be under %13%, the driver store",
    );
}

/// Stamps the `.inx`: architecture and `DriverVer`.
#[must_use]
pub fn stamp(inx: &str, arch: &str, date_mdy: &str, version: &str) -> String {
    let mut out = String::new();
    for line in inx.lines() {
        let l = line.replace("$ARCH$", arch);
        if strip_comment(&l).trim_start().to_ascii_lowercase().starts_with("driverver") {
            let _ = writeln!(out, "DriverVer   = {date_mdy},{version}");
        } else {
            out.push_str(&l);
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const INX: &str = include_str!("../../inf/vsflow.inx");

    fn stamped() -> String {
        stamp(INX, "amd64", "11/21/2026", "0.1.0.0")
    }

    fn rules(text: &str) -> Vec<&'static str> {
        lint(text, Stage::Stamped).into_iter().map(|f| f.rule).collect()
    }

    #[test]
    fn the_shipped_inx_and_its_stamped_inf_are_clean() {
        assert_eq!(lint(INX, Stage::Source), vec![]);
        assert_eq!(lint(&stamped(), Stage::Stamped), vec![]);
        assert!(stamped().contains("[DefaultInstall.NTamd64]"));
        assert!(stamped().contains("DriverVer   = 11/21/2026,0.1.0.0"));
    }

    #[test]
    fn deliberately_broken_infs_are_caught() {
        let s = stamped();
        let cases: Vec<(String, &str)> = vec![
            (s.replace("ServiceDescription = ", "ServiceDescriptionX = "), "string"),
            (
                s.replace("[Strings]", "[Manufacturer]\n%ProviderName% = x\n\n[Strings]"),
                "primitive",
            ),
            (s.replace("[DefaultInstall.NTamd64]\n", "[DefaultInstall]\n"), "decoration"),
            (s.replace("DefaultDestDir = 13", "DefaultDestDir = 12"), "dirid"),
            (s.replace("ServiceType    = 1", "ServiceType    = 2"), "service"),
            (s.replace("LoadOrderGroup = NDIS", "LoadOrderGroup = Base"), "service"),
            (
                s.replace("AddReg         = vsflow.Parameters", "AddReg         = vsflow.Missing"),
                "section",
            ),
            (
                s.replace(
                    "{57465043-616C-6C6F-7574-5F636C617373}",
                    "{4D36E972-E325-11CE-BFC1-08002BE10318}",
                ),
                "class",
            ),
            (s.replace("LegacyUninstall = 1", "LegacyUninstall = 0"), "uninstall"),
            (s.replace("vsflow.sys = 1,,", "other.sys = 1,,"), "files"),
            (
                s.replace("DriverVer   = 11/21/2026,0.1.0.0", "DriverVer   = 2026-11-21,0.1"),
                "driverver",
            ),
            (s.replace("PnpLockdown = 1", "PnpLockdown = 0"), "pnplockdown"),
            (
                s.replace("ServiceBinary  = %13%\\vsflow.sys", "ServiceBinary  = %12%\\vsflow.sys"),
                "service",
            ),
            (s.replace("[DefaultInstall.NTamd64.Services]", "[Other.Services]"), "service"),
        ];
        for (text, rule) in cases {
            let got = rules(&text);
            assert!(got.contains(&rule), "expected rule {rule}, got {got:?}");
        }
    }

    #[test]
    fn comments_and_quotes_are_parsed_like_setupapi() {
        let inf = Inf::parse("[A]\nkey = \"semi;colon\" ; comment\n; whole line\nbare,list,3\n");
        let a = inf.section("a").unwrap();
        assert_eq!(a.len(), 2);
        assert_eq!(a[0].value, "\"semi;colon\"");
        assert_eq!(a[1].key, None);
        assert!(valid_driver_ver("01/31/2026,1.2.3.4"));
        assert!(!valid_driver_ver("13/01/2026,1.2.3.4"));
    }
}
