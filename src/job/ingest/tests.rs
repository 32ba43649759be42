use super::*;
use crate::job::{parse_amount, parse_due_date, FilterMode, PollPolicy};
use std::io::Write;

const MD: &str = "Gentile {{nome}}, è disponibile il tuo avviso TARI per l'anno in corso. Puoi pagarlo dall'app IO entro la scadenza indicata.";

fn template(extra: &str) -> Template {
    let text = format!("subject = \"Avviso TARI per {{{{nome}}}}\"\nmarkdown = \"{MD}\"\n{extra}");
    Template::from_toml_str(&text, Path::new("t.toml")).unwrap()
}

fn csv_file(content: &[u8]) -> tempfile::NamedTempFile {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    f.write_all(content).unwrap();
    f
}

fn rows(t: &Template, content: &[u8]) -> Vec<Row> {
    let f = csv_file(content);
    Ingest::open(f.path(), t)
        .unwrap()
        .map(|r| r.unwrap())
        .collect()
}

fn invalid_field(r: &Row) -> &str {
    match &r.outcome {
        RowOutcome::Invalid { field, .. } => field,
        RowOutcome::Valid { .. } => panic!("line {} is valid", r.line),
    }
}

#[test]
fn placeholders_parse_with_spaces_and_unknown_columns_are_named() {
    let t = Template::from_toml_str(
        &format!("subject = \"Avviso per {{{{ nome }}}} {{{{cognome}}}}\"\nmarkdown = \"{MD}\"\n"),
        Path::new("avviso.toml"),
    )
    .unwrap();
    let err = t
        .bind(&["fiscal_code".into(), "nome".into()])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("avviso.toml")
            && err.contains("cognome")
            && err.contains("2 columns")
            && !err.contains("fiscal_code"),
        "{err}"
    );
    let err = Template::from_toml_str(
        "subject = \"Avviso {{nome\"\nmarkdown = \"x\"\n",
        Path::new("t.toml"),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("never closed"), "{err}");
    let err = template("")
        .bind(&["codice".into(), "nome".into()])
        .unwrap_err()
        .to_string();
    assert!(err.contains("fiscal_code"), "{err}");
}

#[test]
fn options_are_read_and_checked() {
    let t = template("filter = \"none\"\npoll = 0.1\nsends_first = false\n");
    assert_eq!(t.options().filter, FilterMode::None);
    assert_eq!(t.options().poll, PollPolicy::Fraction(0.1));
    assert!(!t.options().sends_first);
    assert_eq!(template("").options().poll, PollPolicy::All);
    assert!(Template::from_toml_str(
        &format!("subject = \"x\"\nmarkdown = \"{MD}\"\nfilter = \"all\"\n"),
        Path::new("t")
    )
    .is_err());
    assert!(Template::from_toml_str(
        &format!("subject = \"x\"\nmarkdown = \"{MD}\"\ntime_to_live = 10\n"),
        Path::new("t")
    )
    .is_err());
    assert!(Template::from_toml_str(
        &format!("subject = \"x\"\nmarkdown = \"{MD}\"\nsubjet = \"typo\"\n"),
        Path::new("t")
    )
    .is_err());
}

#[test]
fn both_delimiters_bom_and_quoted_fields_with_newlines() {
    let t = template("");
    let comma = rows(&t, b"fiscal_code,nome\nRSSMRA85T10A562S,Mario\n");
    let semi = rows(
        &t,
        b"\xEF\xBB\xBFfiscal_code;nome\nRSSMRA85T10A562S;\"Rossi; Mario\"\n",
    );
    assert!(matches!(comma[0].outcome, RowOutcome::Valid { .. }));
    match &semi[0].outcome {
        RowOutcome::Valid { values, .. } => assert_eq!(values, &vec!["Rossi; Mario".to_string()]),
        _ => panic!("BOM + semicolon row should be valid"),
    }
    // A quoted value spanning two lines is not one record: every physical line is its own
    // row (both halves invalid), and the blank line at the end is reported too.
    let r = rows(
        &t,
        b"fiscal_code,nome\nRSSMRA85T10A562S,\"Mario\nRossi\"\nMRTMTT91D08F205J,Matteo\n\n",
    );
    assert_eq!(
        r.iter().map(|r| r.line).collect::<Vec<_>>(),
        vec![2, 3, 4, 5]
    );
    assert_eq!(invalid_field(&r[0]), "nome");
    assert_eq!(invalid_field(&r[1]), "(row)");
    assert!(matches!(r[2].outcome, RowOutcome::Valid { .. }));
    assert_eq!(invalid_field(&r[3]), "(row)");
}

#[test]
fn every_invalid_row_kind_names_its_field() {
    let t = template("due_date = \"{{scadenza}}\"\n[payment_data]\namount = \"{{importo}}\"\namount_unit = \"euro\"\nnotice_number = \"{{avviso}}\"\n");
    let csv = "fiscal_code,nome,scadenza,importo,avviso\n\
RSSMRA85T10A562S,Mario,2030-01-31,12,50,012345678901234567\n\
RSSMRA85T10A562,Mario,2030-01-31,\"12,50\",012345678901234567\n\
RSSMRA85T10A562S,Mario,31-01-2030,\"12,50\",012345678901234567\n\
RSSMRA85T10A562S,Mario,2030-01-31,\"0,00\",012345678901234567\n\
RSSMRA85T10A562S,Mario,2030-01-31,\"12,50\",412345678901234567\n\
RSSMRA85T10A562S,Mario\n\
RSSMRA85T10A562S,Mario,31/01/2030,\"12,50\",012345678901234567\n";
    let r = rows(&t, csv.as_bytes());
    assert_eq!(invalid_field(&r[0]), "(row)"); // 12,50 unquoted: 6 fields
    assert_eq!(invalid_field(&r[1]), "fiscal_code");
    assert_eq!(invalid_field(&r[2]), "due_date");
    assert_eq!(invalid_field(&r[3]), "payment_data.amount");
    assert_eq!(invalid_field(&r[4]), "payment_data.notice_number");
    assert_eq!(invalid_field(&r[5]), "(row)");
    assert!(
        matches!(r[6].outcome, RowOutcome::Valid { .. }),
        "{:?}",
        r[6].outcome
    );
    // The reason for a bad fiscal code never carries the code.
    if let RowOutcome::Invalid { reason, .. } = &r[1].outcome {
        assert!(!reason.contains("RSSMRA85T10A562"), "{reason}");
    }
    // Text that is not UTF-8 stops the ingest with the line and the encoding key to use.
    let f = csv_file(b"fiscal_code,nome,scadenza,importo,avviso\nRSSMRA85T10A562S,Mar\xffio,2030-01-31,1,012345678901234567\n");
    let err = Ingest::open(f.path(), &t)
        .unwrap()
        .next()
        .unwrap()
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("line 2") && err.contains("encoding = \"windows-1252\""),
        "{err}"
    );
}

#[test]
fn rendered_lengths_count_characters_at_the_boundaries() {
    // Subject "Avviso TARI per " is 16 chars; a 104-char name reaches 120, 105 is one too many.
    let t = template("");
    let header = b"fiscal_code,nome\n".to_vec();
    let ok = [
        header.clone(),
        format!("RSSMRA85T10A562S,{}\n", "à".repeat(104)).into_bytes(),
    ]
    .concat();
    let long = [
        header.clone(),
        format!("RSSMRA85T10A562S,{}\n", "à".repeat(105)).into_bytes(),
    ]
    .concat();
    assert!(matches!(rows(&t, &ok)[0].outcome, RowOutcome::Valid { .. }));
    assert_eq!(invalid_field(&rows(&t, &long)[0]), "subject");
    // Markdown: 78 static chars + the row's value must reach 80.
    let md78 = "è".repeat(78);
    let t = Template::from_toml_str(
        &format!("subject = \"Oggetto valido\"\nmarkdown = \"{md78}{{{{x}}}}\"\n"),
        Path::new("t.toml"),
    )
    .unwrap();
    let r = rows(
        &t,
        "fiscal_code,x\nRSSMRA85T10A562S,\nRSSMRA85T10A562S,ù\nRSSMRA85T10A562S,ùù\n".as_bytes(),
    );
    assert_eq!(invalid_field(&r[0]), "markdown");
    assert_eq!(invalid_field(&r[1]), "markdown");
    assert!(matches!(r[2].outcome, RowOutcome::Valid { .. }));
}

#[test]
fn render_builds_the_message_validation_promised() {
    let t = template("due_date = \"{{scadenza}}\"\nfeature_level_type = \"ADVANCED\"\n[payment_data]\namount = \"{{importo}}\"\nnotice_number = \"{{avviso}}\"\npayee = \"01234567890\"\n");
    let f = csv_file(b"fiscal_code;nome;scadenza;importo;avviso\nrssmra85t10a562s;Mario;31/12/2030;1250;012345678901234567\n");
    let mut ingest = Ingest::open(f.path(), &t).unwrap();
    let row = ingest.next().unwrap().unwrap();
    let RowOutcome::Valid {
        fiscal_code,
        values,
        ..
    } = row.outcome
    else {
        panic!("valid")
    };
    let msg = ingest.template().render(&fiscal_code, &values).unwrap();
    assert!(msg.validate().is_ok());
    assert_eq!(msg.content.subject, "Avviso TARI per Mario");
    assert_eq!(msg.content.payment_data.as_ref().unwrap().amount, 1250);
    assert_eq!(msg.fiscal_code.unwrap().expose(), "RSSMRA85T10A562S");
    let json = serde_json::to_value(&msg).unwrap();
    assert_eq!(json["content"]["due_date"], "2030-12-31T00:00:00.000Z");
}

#[test]
fn amounts_and_dates() {
    assert_eq!(parse_amount("1250", false), Ok(1250));
    assert!(parse_amount("12,50", false).is_err());
    assert_eq!(parse_amount("12,50", true), Ok(1250));
    assert_eq!(parse_amount("12.5", true), Ok(1250));
    assert_eq!(parse_amount("12", true), Ok(1200));
    assert!(parse_amount("1.250,00", true).is_err());
    assert!(parse_amount("-3", false).is_err());
    assert_eq!(
        parse_due_date("2030-01-31T10:00:00+01:00")
            .unwrap()
            .to_rfc3339(),
        "2030-01-31T09:00:00+00:00"
    );
    assert_eq!(
        parse_due_date("31/01/2030").unwrap(),
        parse_due_date("2030-01-31").unwrap()
    );
    assert!(parse_due_date("31-01-2030").is_err());
}

#[test]
fn resume_after_skips_committed_lines() {
    let t = template("");
    let f =
        csv_file(b"fiscal_code,nome\nRSSMRA85T10A562S,a\nMRTMTT91D08F205J,b\nRSSMRA85T10A562S,c\n");
    let mut ingest = Ingest::open(f.path(), &t).unwrap();
    ingest.resume_after(3).unwrap();
    let lines: Vec<u64> = ingest.map(|r| r.unwrap().line).collect();
    assert_eq!(lines, vec![4]);
}

#[test]
fn job_id_is_stable_and_sensitive_to_both_inputs() {
    let a = csv_file(b"fiscal_code,nome\nRSSMRA85T10A562S,a\n");
    let b = csv_file(b"fiscal_code,nome\nRSSMRA85T10A562S,b\n");
    let id = job_id("t1", a.path()).unwrap();
    assert_eq!(id, job_id("t1", a.path()).unwrap());
    assert_eq!(id.len(), 16);
    assert_ne!(id, job_id("t2", a.path()).unwrap());
    assert_ne!(id, job_id("t1", b.path()).unwrap());
}

#[test]
fn a_large_csv_streams_with_bounded_memory() {
    let t = template("");
    let mut f = tempfile::NamedTempFile::new().unwrap();
    writeln!(f, "fiscal_code,nome").unwrap();
    for i in 0..200_000u32 {
        writeln!(f, "RSSMRA85T10A562S,Nome{i}").unwrap();
    }
    f.flush().unwrap();
    let ingest = Ingest::open(f.path(), &t).unwrap();
    // The iterator yields rows one by one; counting them holds none.
    let (mut valid, mut last) = (0u32, 0u64);
    for row in ingest {
        let row = row.unwrap();
        assert!(row.line > last);
        last = row.line;
        valid += u32::from(matches!(row.outcome, RowOutcome::Valid { .. }));
    }
    assert_eq!(valid, 200_000);
    assert_eq!(last, 200_001);
}

fn outcomes(r: &[Row]) -> Vec<(u64, String)> {
    r.iter()
        .map(|r| {
            (
                r.line,
                match &r.outcome {
                    RowOutcome::Valid { values, .. } => format!("ok {}", values.join("|")),
                    RowOutcome::Invalid { field, .. } => format!("invalid {field}"),
                },
            )
        })
        .collect()
}

#[test]
fn stray_quotes_never_merge_rows_and_every_line_keeps_its_number() {
    let t = Template::from_toml_str(
        &format!("subject = \"Avviso TARI per {{{{nome}}}}\"\nmarkdown = \"{MD} {{{{anno}}}}\"\n"),
        Path::new("t.toml"),
    )
    .unwrap();
    let csv = "fiscal_code;nome;anno\n\
AAAAAA86T65C044Z;\"Mario;2026\n\
AAAAAB91H15F518R;Giovanna D\"Angelo;2026\n\
RSSMRA85T10A562S;\"Rossi; Mario\";2026\n";
    let r = rows(&t, csv.as_bytes());
    assert_eq!(
        outcomes(&r),
        vec![
            (2, "invalid nome".to_owned()),
            (3, "ok Giovanna D\"Angelo|2026".to_owned()),
            (4, "ok Rossi; Mario|2026".to_owned()),
        ]
    );
    // One stray quote does not swallow the rest of the file.
    let csv = "fiscal_code;nome;anno\nAAAAAA86T65C044Z;\"Mario;2026\nAAAAAB91H15F518R;Giovanna;2026\nRSSMRA85T10A562S;Luca;2026\n";
    let r = rows(&t, csv.as_bytes());
    assert_eq!(r.len(), 3);
    assert!(r[1..]
        .iter()
        .all(|r| matches!(r.outcome, RowOutcome::Valid { .. })));
}

#[test]
fn line_numbers_match_the_editor_for_lf_crlf_cr_and_bom() {
    let t = template("");
    for (name, bytes) in [
        (
            "LF",
            &b"fiscal_code;nome\nRSSMRA85T10A562S;a\nbad;b\nMRTMTT91D08F205J;c\n"[..],
        ),
        (
            "CRLF",
            b"fiscal_code;nome\r\nRSSMRA85T10A562S;a\r\nbad;b\r\nMRTMTT91D08F205J;c\r\n",
        ),
        (
            "CR",
            b"fiscal_code;nome\rRSSMRA85T10A562S;a\rbad;b\rMRTMTT91D08F205J;c\r",
        ),
        (
            "BOM+CRLF, no final newline",
            b"\xEF\xBB\xBFfiscal_code;nome\r\nRSSMRA85T10A562S;a\r\nbad;b\r\nMRTMTT91D08F205J;c",
        ),
    ] {
        let r = rows(&t, bytes);
        assert_eq!(
            outcomes(&r),
            vec![
                (2, "ok a".to_owned()),
                (3, "invalid fiscal_code".to_owned()),
                (4, "ok c".to_owned())
            ],
            "{name}"
        );
    }
}

#[test]
fn blank_lines_and_control_characters_are_reported_rows() {
    let t = template("");
    let r = rows(
        &t,
        b"fiscal_code;nome\n\nRSSMRA85T10A562S;Ma\0rio\n;\n  \nRSSMRA85T10A562S;Mario\tRossi\nMRTMTT91D08F205J;  Matteo\t\n",
    );
    assert_eq!(
        outcomes(&r),
        vec![
            (2, "invalid (row)".to_owned()),
            (3, "invalid nome".to_owned()),
            (4, "invalid (row)".to_owned()),
            (5, "invalid (row)".to_owned()),
            (6, "invalid nome".to_owned()),
            (7, "ok Matteo".to_owned()),
        ]
    );
    if let RowOutcome::Invalid { reason, .. } = &r[1].outcome {
        assert!(
            reason.contains("U+0000") && !reason.contains("Ma"),
            "{reason}"
        );
    }
}

#[test]
fn windows_1252_needs_the_encoding_key_and_then_reads_accents() {
    let csv = b"fiscal_code;nome\nRSSMRA85T10A562S;Niccol\xf2 Perch\xe9\n";
    let f = csv_file(csv);
    let t = template("");
    assert!(Ingest::open(f.path(), &t).unwrap().next().unwrap().is_err());
    let t = template("encoding = \"windows-1252\"\n");
    let r = rows(&t, csv);
    assert_eq!(outcomes(&r), vec![(2, "ok Niccolò Perché".to_owned())]);
    // --encoding wins over the template; a BOM wins over both.
    let r: Vec<Row> = Ingest::open_with(
        f.path(),
        &template(""),
        Some(crate::job::FileEncoding::from_label("cp1252").unwrap()),
    )
    .unwrap()
    .map(|r| r.unwrap())
    .collect();
    assert_eq!(outcomes(&r), vec![(2, "ok Niccolò Perché".to_owned())]);
    assert!(Template::from_toml_str(
        &format!("subject = \"Oggetto valido\"\nmarkdown = \"{MD}\"\nencoding = \"ebcdic\"\n"),
        Path::new("t")
    )
    .is_err());
}

#[test]
fn identify_refuses_utf8_text_declared_windows_1252() {
    // The template of last month's Windows-1252 campaign, reused with a UTF-8 export.
    let t = template("encoding = \"windows-1252\"\n");
    let f = csv_file("fiscal_code;nome\nRSSMRA85T10A562S;Niccolò\n".as_bytes());
    let err = identify("t", f.path(), &t, &JobInputs::default())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("UTF-8") && err.contains("windows-1252"),
        "{err}"
    );
    // Plain ASCII reads the same either way, and real Windows-1252 bytes are accepted.
    let f = csv_file(b"fiscal_code;nome\nRSSMRA85T10A562S;Nicola\n");
    assert!(identify("t", f.path(), &t, &JobInputs::default()).is_ok());
    let f = csv_file(b"fiscal_code;nome\nRSSMRA85T10A562S;Niccol\xf2\n");
    assert!(identify("t", f.path(), &t, &JobInputs::default()).is_ok());
}

#[test]
fn identify_refuses_a_file_that_is_not_utf8_before_anything() {
    let t = template("");
    let f = csv_file(b"fiscal_code;nome\nRSSMRA85T10A562S;ok\nRSSMRA85T10A562S;Niccol\xf2\n");
    let err = identify("t", f.path(), &t, &JobInputs::default())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("line 3") && err.contains("windows-1252"),
        "{err}"
    );
    let w = JobInputs {
        encoding: Some(crate::job::FileEncoding::from_label("windows-1252").unwrap()),
        allow_repeat: false,
        sheet: None,
    };
    let id = identify("t", f.path(), &t, &w).unwrap();
    assert_eq!(id.lines, 3);
    // The options are part of the identity; without them the id is the old one.
    assert_eq!(
        identify(
            "t",
            csv_file(b"fiscal_code;nome\n").path(),
            &t,
            &JobInputs::default()
        )
        .unwrap()
        .id,
        job_id("t", csv_file(b"fiscal_code;nome\n").path()).unwrap()
    );
    let repeat = JobInputs {
        allow_repeat: true,
        ..w.clone()
    };
    assert_ne!(id.id, identify("t", f.path(), &t, &repeat).unwrap().id);
}

#[test]
fn utf16_with_bom_is_read() {
    let text = "fiscal_code;nome\r\nRSSMRA85T10A562S;Niccolò\r\n";
    let mut le = vec![0xFF, 0xFE];
    for u in text.encode_utf16() {
        le.extend_from_slice(&u.to_le_bytes());
    }
    let r = rows(&template(""), &le);
    assert_eq!(outcomes(&r), vec![(2, "ok Niccolò".to_owned())]);
}

#[test]
fn two_digit_years_are_refused_with_the_reason() {
    let err = parse_due_date("31/12/26").unwrap_err();
    assert!(err.contains("four digits"), "{err}");
    assert!(parse_due_date("26-12-31").is_err());
    assert!(parse_due_date("31/12/2026").is_ok());
}

#[test]
fn fixed_text_over_io_limits_refuses_the_template_at_load() {
    let long = "x".repeat(121);
    let err = Template::from_toml_str(
        &format!("subject = \"{long}{{{{nome}}}}\"\nmarkdown = \"{MD}\"\n"),
        Path::new("t.toml"),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("subject") && err.contains("120"), "{err}");
    let err = Template::from_toml_str(
        &format!(
            "subject = \"Oggetto valido\"\nmarkdown = \"{}\"\n",
            "y".repeat(10_001)
        ),
        Path::new("t.toml"),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("markdown") && err.contains("10000"), "{err}");
    // Too short without placeholders: no row could ever fill it.
    assert!(Template::from_toml_str(
        &format!("subject = \"Breve\"\nmarkdown = \"{MD}\"\n"),
        Path::new("t.toml")
    )
    .is_err());
    // Short with a placeholder: the rows decide.
    assert!(Template::from_toml_str(
        &format!("subject = \"{{{{nome}}}}\"\nmarkdown = \"{MD}\"\n"),
        Path::new("t.toml")
    )
    .is_ok());
}

#[test]
fn the_campaign_is_the_subject_as_written_unless_named() {
    assert_eq!(template("").campaign(), "Avviso TARI per {{nome}}");
    assert_eq!(
        template("campaign = \"TARI 2026\"\n").campaign(),
        "TARI 2026"
    );
}
