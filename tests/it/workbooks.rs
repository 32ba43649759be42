//! Workbooks in and out (issue 19): recipients from .xlsx / .ods through the same ingest as a
//! CSV, checked against the fake's ground truth (what each citizen received), and reports as
//! .xlsx read back with calamine. Workbooks are written in the test by rust_xlsxwriter; the
//! LibreOffice-made fixtures are in tests/fixtures/workbooks (see its README).

use crate::common;

use std::path::{Path, PathBuf};

use calamine::{Data, Reader, Xlsx};
use common::*;
use corriere::job::{identify, Ingest, JobInputs, Row, RowOutcome, Template};
use rust_xlsxwriter::{ExcelDateTime, Format, Formula, Workbook};

const MD: &str = "Gentile {{nome}}, è disponibile il tuo avviso TARI per l'anno {{anno}}. Puoi pagarlo dall'app IO entro la scadenza.";

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/workbooks")
        .join(name)
}

/// A payment template over the columns of the fixtures.
fn payment_template(dir: &Path, extra: &str) -> PathBuf {
    let p = dir.join("pagamento.toml");
    std::fs::write(
        &p,
        format!(
            "subject = \"Avviso di pagamento per {{{{nome}}}}\"\n\
             markdown = \"Gentile {{{{nome}}}}, è disponibile l'avviso di pagamento di {{{{importo}}}} euro da pagare entro il {{{{scadenza}}}} dall'app IO.\"\n\
             fiscal_code_column = \"codice_fiscale\"\n\
             due_date = \"{{{{scadenza}}}}\"\n\
             filter = \"none\"\npoll = \"none\"\n\
             campaign = \"pagamento {}\"\n\
             {extra}\n\
             [payment_data]\n\
             amount = \"{{{{importo}}}}\"\n\
             amount_unit = \"euro\"\n\
             notice_number = \"{{{{avviso}}}}\"\n",
            dir.display()
        ),
    )
    .unwrap();
    p
}

fn ingest(template: &Path, recipients: &Path, inputs: &JobInputs) -> (Vec<String>, Vec<Row>) {
    let t = Template::from_toml_file(template).unwrap();
    let ing = Ingest::open_inputs(recipients, &t, inputs).unwrap();
    let used = ing.template().used_columns().to_vec();
    (used, ing.map(|r| r.unwrap()).collect())
}

/// The value of column `name` in a valid row.
fn value<'a>(used: &[String], row: &'a Row, name: &str) -> &'a str {
    let i = used.iter().position(|c| c == name).expect("a used column");
    match &row.outcome {
        RowOutcome::Valid { values, .. } => &values[i],
        RowOutcome::Invalid { field, reason } => {
            panic!("line {} invalid: {field}: {reason}", row.line)
        }
    }
}

fn invalid(row: &Row) -> (&str, &str) {
    match &row.outcome {
        RowOutcome::Invalid { field, reason } => (field, reason),
        RowOutcome::Valid { .. } => panic!("line {} is valid", row.line),
    }
}

#[test]
fn libreoffice_workbooks_read_as_the_user_sees_them() {
    let dir = tempfile::tempdir().unwrap();
    let t = payment_template(dir.path(), "");
    for name in ["recipients.xlsx", "recipients.ods"] {
        let (used, rows) = ingest(&t, &fixture(name), &JobInputs::default());
        let lines: Vec<u64> = rows.iter().map(|r| r.line).collect();
        assert_eq!(lines, vec![2, 3, 4, 5, 6], "{name}: sheet row numbers");
        assert_eq!(value(&used, &rows[0], "nome"), "Niccolò Rossi", "{name}");
        assert_eq!(
            value(&used, &rows[0], "avviso"),
            "302000100000019421",
            "{name}"
        );
        assert_eq!(value(&used, &rows[0], "importo"), "12.5", "{name}");
        assert_eq!(value(&used, &rows[0], "scadenza"), "31/12/2026", "{name}");
        // The 18-digit notice number typed as a number: refused, never rounded.
        let (field, reason) = invalid(&rows[1]);
        assert_eq!(field, "avviso", "{name}");
        assert!(reason.contains("16 or more digits"), "{name}: {reason}");
        assert_eq!(
            value(&used, &rows[2], "avviso"),
            "012345678901234567",
            "{name}"
        );
        assert_eq!(value(&used, &rows[2], "importo"), "100", "{name}");
        assert_eq!(invalid(&rows[3]), ("(row)", "blank row"), "{name}");
        assert_eq!(value(&used, &rows[4], "importo"), "0.1", "{name}");
        assert_eq!(value(&used, &rows[4], "scadenza"), "15/01/2026", "{name}");
    }
    // The template's date format.
    let t = payment_template(dir.path(), "date_format = \"%Y-%m-%d\"");
    let (used, rows) = ingest(&t, &fixture("recipients.xlsx"), &JobInputs::default());
    assert_eq!(value(&used, &rows[0], "scadenza"), "2026-12-31");
}

/// Writes a workbook of `rows` (cells as text) under `header`, on sheet `sheet`, with the
/// third column as a number cell when it parses as one (a year, as offices type it).
fn write_text_workbook(path: &Path, sheet: &str, header: &[&str], rows: &[Vec<String>]) {
    let mut wb = Workbook::new();
    let ws = wb.add_worksheet();
    ws.set_name(sheet).unwrap();
    for (c, h) in header.iter().enumerate() {
        ws.write_string(0, c as u16, *h).unwrap();
    }
    for (r, row) in rows.iter().enumerate() {
        for (c, cell) in row.iter().enumerate() {
            match (c, cell.parse::<u32>()) {
                (2, Ok(n)) => ws.write_number(r as u32 + 1, c as u16, n).unwrap(),
                _ => ws.write_string(r as u32 + 1, c as u16, cell).unwrap(),
            };
        }
    }
    wb.save(path).unwrap();
}

/// Every cell of a report CSV (BOM and `;`), without the `'` that guards formula-like cells.
fn csv_report_cells(path: &Path) -> Vec<Vec<String>> {
    let bytes = std::fs::read(path).unwrap();
    let text = bytes.strip_prefix(b"\xEF\xBB\xBF".as_slice()).unwrap();
    let mut r = csv::ReaderBuilder::new()
        .delimiter(b';')
        .has_headers(false)
        .from_reader(text);
    r.records()
        .map(|rec| rec.unwrap().iter().map(str::to_owned).collect())
        .collect()
}

/// Every cell of an .xlsx report's first sheet, read back with calamine (numbers as integers,
/// empty cells as "").
fn xlsx_report_cells(path: &Path) -> Vec<Vec<String>> {
    let mut wb: Xlsx<_> = calamine::open_workbook(path).unwrap();
    let names = wb.sheet_names();
    assert_eq!(names, vec!["esito".to_owned(), "riepilogo".to_owned()]);
    let range = wb.worksheet_range("esito").unwrap();
    assert_eq!(range.start(), Some((0, 0)));
    range
        .rows()
        .map(|row| {
            row.iter()
                .map(|c| match c {
                    Data::Float(f) => format!("{}", *f as i64),
                    Data::String(s) => s.clone(),
                    Data::Empty => String::new(),
                    other => panic!("unexpected cell {other:?}"),
                })
                .collect()
        })
        .collect()
}

/// The facts on an .xlsx report's summary sheet (name → value).
fn xlsx_summary_facts(path: &Path) -> std::collections::BTreeMap<String, String> {
    let mut wb: Xlsx<_> = calamine::open_workbook(path).unwrap();
    let range = wb.worksheet_range("riepilogo").unwrap();
    range
        .rows()
        .filter_map(|row| match (row.first(), row.get(1)) {
            (Some(Data::String(k)), Some(Data::String(v))) => Some((k.clone(), v.clone())),
            _ => None,
        })
        .collect()
}

async fn report_to(fake: &corriere_fake_io::FakeIoHandle, store: &Path, job: &str, out: &Path) {
    let o = corriere(fake, store)
        .args(["report", job, "--out"])
        .arg(out)
        .output()
        .await
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_campaign_from_csv_and_xlsx_gives_identical_reports() {
    // Two fakes with the same population: each run's ground truth apart.
    let (fake_csv, fake_xlsx) = (
        start_fake(fake_config(400)).await,
        start_fake(fake_config(400)).await,
    );
    let dir = tempfile::tempdir().unwrap();
    let campaign = write_campaign(dir.path(), &fake_csv, 300, "none");
    // The same rows as a workbook.
    let text = std::fs::read_to_string(&campaign.recipients).unwrap();
    let rows: Vec<Vec<String>> = text
        .lines()
        .skip(1)
        .map(|l| l.split(';').map(str::to_owned).collect())
        .collect();
    let xlsx = dir.path().join("recipients.xlsx");
    write_text_workbook(&xlsx, "Foglio1", &["codice_fiscale", "nome", "anno"], &rows);

    let (store_csv, store_xlsx) = (dir.path().join("store-csv"), dir.path().join("store-xlsx"));
    let (report_csv, report_xlsx) = (dir.path().join("csv.csv"), dir.path().join("esito.xlsx"));
    for (fake, store, recipients, report) in [
        (&fake_csv, &store_csv, &campaign.recipients, &report_csv),
        (&fake_xlsx, &store_xlsx, &xlsx, &report_xlsx),
    ] {
        let out = corriere(fake, store)
            .args(["send", "--skip-preflight", "--template"])
            .arg(&campaign.template)
            .arg("--recipients")
            .arg(recipients)
            .arg("--report")
            .arg(report)
            .output()
            .await
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // Ground truth: every citizen got the same message from both runs, once at most.
    for i in 0..300 {
        let fc = &fake_csv.population().citizen(i).fiscal_code;
        let (a, b) = (fake_csv.contents_for(fc), fake_xlsx.contents_for(fc));
        assert!(a.len() <= 1, "citizen {i}");
        assert_eq!(a, b, "citizen {i}");
    }
    assert!(fake_xlsx.stats().messages_created > 200);

    // The .xlsx report read back equals the CSV report of the same job, cell for cell.
    let xlsx_job = local_job_id(&fake_xlsx, &store_xlsx).await;
    let xlsx_job_csv = dir.path().join("xlsx-job.csv");
    report_to(&fake_xlsx, &store_xlsx, &xlsx_job, &xlsx_job_csv).await;
    let from_xlsx = xlsx_report_cells(&report_xlsx);
    assert_eq!(from_xlsx, csv_report_cells(&xlsx_job_csv));
    // The summary sheet carries the runs' facts: when the job was done and its IO calls per
    // message IO created (the fake's ground truth: every call it answered).
    let facts = xlsx_summary_facts(&report_xlsx);
    assert!(facts.contains_key("finished"), "{facts:?}");
    let per_message: f64 = facts["IO calls per message"].parse().unwrap();
    let created = fake_xlsx.stats().messages_created as f64;
    let answered = fake_xlsx.stats().requests_total as f64;
    assert!(
        (per_message - answered / created).abs() < 0.05,
        "{per_message} vs {answered} / {created}"
    );
    assert_eq!(from_xlsx.len(), 301);

    // And the two jobs' reports are the same but for the message ids the two fakes made.
    let strip_ids = |rows: Vec<Vec<String>>| -> Vec<Vec<String>> {
        rows.into_iter()
            .map(|mut r| {
                r[3] = if r[3].is_empty() { "" } else { "(id)" }.to_owned();
                r
            })
            .collect()
    };
    assert_eq!(
        strip_ids(csv_report_cells(&report_csv)),
        strip_ids(from_xlsx)
    );
    check_report(&read_report(&report_csv), &campaign.expect, &[]);
    fake_csv.shutdown().await;
    fake_xlsx.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notice_numbers_dates_and_formulas_reach_the_citizen_as_the_sheet_shows_them() {
    let fake = start_fake(fake_config(20)).await;
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let fc = |i: usize| fake.population().citizen(i).fiscal_code.clone();
    let t = payment_template(dir.path(), "");
    let path = dir.path().join("avvisi.xlsx");
    {
        let mut wb = Workbook::new();
        let ws = wb.add_worksheet();
        let date = Format::new().set_num_format("dd/mm/yyyy");
        let due = ExcelDateTime::from_ymd(2026, 12, 31).unwrap();
        for (c, h) in ["codice_fiscale", "nome", "avviso", "importo", "scadenza"]
            .iter()
            .enumerate()
        {
            ws.write_string(0, c as u16, *h).unwrap();
        }
        // Row 2: the notice number as text, the amount as a number, the date as a date cell.
        ws.write_string(1, 0, fc(0)).unwrap();
        ws.write_string(1, 1, "Niccolò").unwrap();
        ws.write_string(1, 2, "302000100000019421").unwrap();
        ws.write_number(1, 3, 12.5).unwrap();
        ws.write_datetime_with_format(1, 4, &due, &date).unwrap();
        // Row 3: the notice number as a number cell.
        ws.write_string(2, 0, fc(1)).unwrap();
        ws.write_string(2, 1, "Luisa").unwrap();
        ws.write_number(2, 2, 302_000_100_000_019_421_f64).unwrap();
        ws.write_number(2, 3, 7).unwrap();
        ws.write_datetime_with_format(2, 4, &due, &date).unwrap();
        // Row 4: the amount as a formula (its cached value is read).
        ws.write_string(3, 0, fc(2)).unwrap();
        ws.write_string(3, 1, "Mario").unwrap();
        ws.write_string(3, 2, "012345678901234567").unwrap();
        ws.write_formula(3, 3, Formula::new("=10+2.25").set_result("12.25"))
            .unwrap();
        ws.write_datetime_with_format(3, 4, &due, &date).unwrap();
        // Row 5: a formula whose value has no exact short form.
        ws.write_string(4, 0, fc(3)).unwrap();
        ws.write_string(4, 1, "Anna").unwrap();
        ws.write_string(4, 2, "112345678901234567").unwrap();
        ws.write_formula(
            4,
            3,
            Formula::new("=0.1+0.2").set_result("0.30000000000000004"),
        )
        .unwrap();
        ws.write_datetime_with_format(4, 4, &due, &date).unwrap();
        // Trailing rows that only carry formatting: not rows of the job.
        for r in 5..9 {
            ws.write_blank(r, 0, &date).unwrap();
        }
        wb.save(&path).unwrap();
    }
    let report = dir.path().join("esito.xlsx");
    let out = corriere(&fake, &store)
        .args(["send", "--skip-preflight", "--template"])
        .arg(&t)
        .arg("--recipients")
        .arg(&path)
        .arg("--report")
        .arg(&report)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let body = |i: usize| -> serde_json::Value {
        let bodies = fake.contents_for(&fc(i));
        assert_eq!(bodies.len(), 1, "citizen {i}: {bodies:?}");
        serde_json::from_str(&bodies[0]).unwrap()
    };
    let b0 = body(0);
    assert_eq!(b0["payment_data"]["notice_number"], "302000100000019421");
    assert_eq!(b0["payment_data"]["amount"], 1250);
    assert_eq!(b0["due_date"], "2026-12-31T00:00:00.000Z");
    let md = b0["markdown"].as_str().unwrap();
    assert!(
        md.contains("12.5 euro da pagare entro il 31/12/2026"),
        "{md}"
    );
    assert_eq!(
        fake.messages_for(&fc(1)),
        0,
        "a rounded notice number is never sent"
    );
    let b2 = body(2);
    assert_eq!(b2["payment_data"]["amount"], 1225);
    assert_eq!(b2["payment_data"]["notice_number"], "012345678901234567");
    assert_eq!(fake.messages_for(&fc(3)), 0);

    let rows = xlsx_report_cells(&report);
    let outcomes: Vec<(&str, &str, &str)> = rows[1..]
        .iter()
        .map(|r| (r[0].as_str(), r[2].as_str(), r[8].as_str()))
        .collect();
    assert_eq!(
        outcomes,
        vec![
            ("2", "submitted", ""),
            ("3", "invalid", "avviso"),
            ("4", "submitted", ""),
            ("5", "invalid", "importo"),
        ]
    );
    assert!(rows[2][9].contains("16 or more digits"), "{}", rows[2][9]);
    assert!(
        rows[4][9].contains("15 significant digits"),
        "{}",
        rows[4][9]
    );
    fake.shutdown().await;
}

#[test]
fn a_named_sheet_is_read_and_a_missing_one_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("due.xlsx");
    {
        let mut wb = Workbook::new();
        let a = wb.add_worksheet();
        a.set_name("Istruzioni").unwrap();
        a.write_string(0, 0, "Compilare il foglio Lista").unwrap();
        let b = wb.add_worksheet();
        b.set_name("Lista").unwrap();
        b.write_string(2, 0, "fiscal_code").unwrap();
        b.write_string(2, 1, "nome").unwrap();
        b.write_string(2, 2, "anno").unwrap();
        b.write_string(3, 0, "RSSMRA85T10A562S").unwrap();
        b.write_string(3, 1, "Mario").unwrap();
        b.write_number(3, 2, 2026).unwrap();
        // A value right of the header.
        b.write_string(4, 0, "VRDLGU70A41H501S").unwrap();
        b.write_string(4, 1, "Luisa").unwrap();
        b.write_number(4, 2, 2026).unwrap();
        b.write_string(4, 5, "nota").unwrap();
        wb.save(&path).unwrap();
    }
    let t = dir.path().join("t.toml");
    std::fs::write(
        &t,
        format!("subject = \"Avviso TARI {{{{anno}}}}\"\nmarkdown = \"{MD}\"\n"),
    )
    .unwrap();
    // The first sheet has no such columns.
    let template = Template::from_toml_file(&t).unwrap();
    let err = Ingest::open_inputs(&path, &template, &JobInputs::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("lacks"), "{err}");
    // --sheet: the header is the first non-blank row (row 3), lines are the sheet's.
    let inputs = JobInputs {
        sheet: Some("Lista".to_owned()),
        ..JobInputs::default()
    };
    let (used, rows) = ingest(&t, &path, &inputs);
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].line, 4);
    assert_eq!(value(&used, &rows[0], "anno"), "2026");
    assert_eq!(rows[1].line, 5);
    let (field, reason) = invalid(&rows[1]);
    assert_eq!(field, "(row)");
    assert!(
        reason.contains("column F") && reason.contains("(C)"),
        "{reason}"
    );
    let text = std::fs::read_to_string(&t).unwrap();
    let id = identify(&text, &path, &template, &inputs).unwrap();
    assert_eq!((id.lines, id.sheet.as_deref()), (3, Some("Lista")));
    // The template's `sheet`, and a sheet that is not there.
    std::fs::write(&t, format!("{text}sheet = \"Elenco\"\n")).unwrap();
    let template = Template::from_toml_file(&t).unwrap();
    let err = Ingest::open_inputs(&path, &template, &JobInputs::default())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("no sheet \"Elenco\"") && err.contains("\"Istruzioni\", \"Lista\""),
        "{err}"
    );
    // --encoding means nothing for a workbook.
    let inputs = JobInputs {
        encoding: Some(corriere::job::FileEncoding::UTF8),
        ..JobInputs::default()
    };
    assert!(Ingest::open_inputs(&path, &template, &inputs).is_err());
}

#[test]
fn a_workbook_saved_again_is_the_same_job_and_an_edited_one_is_not() {
    let dir = tempfile::tempdir().unwrap();
    let t = dir.path().join("t.toml");
    std::fs::write(
        &t,
        format!("subject = \"Avviso TARI {{{{anno}}}}\"\nmarkdown = \"{MD}\"\n"),
    )
    .unwrap();
    let text = std::fs::read_to_string(&t).unwrap();
    let template = Template::from_toml_file(&t).unwrap();
    let rows = |name: &str| {
        vec![
            vec![
                "RSSMRA85T10A562S".to_owned(),
                name.to_owned(),
                "2026".to_owned(),
            ],
            vec![
                "VRDLGU70A41H501S".to_owned(),
                "Luisa".to_owned(),
                "2026".to_owned(),
            ],
        ]
    };
    let header = ["fiscal_code", "nome", "anno"];
    let (a, b, c) = (
        dir.path().join("a.xlsx"),
        dir.path().join("b.xlsx"),
        dir.path().join("c.xlsx"),
    );
    write_text_workbook(&a, "Foglio1", &header, &rows("Mario"));
    // The same content saved again, with other formatting (the bytes differ).
    {
        let mut wb = Workbook::new();
        let ws = wb.add_worksheet();
        ws.set_name("Foglio1").unwrap();
        let bold = Format::new().set_bold();
        for (c, h) in header.iter().enumerate() {
            ws.write_string_with_format(0, c as u16, *h, &bold).unwrap();
        }
        for (r, row) in rows("Mario").iter().enumerate() {
            ws.write_string(r as u32 + 1, 0, &row[0]).unwrap();
            ws.write_string(r as u32 + 1, 1, &row[1]).unwrap();
            ws.write_number(r as u32 + 1, 2, 2026).unwrap();
        }
        ws.set_column_width(1, 30).unwrap();
        wb.save(&b).unwrap();
    }
    write_text_workbook(&c, "Foglio1", &header, &rows("Maria"));
    assert_ne!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
    let id = |p: &Path| {
        identify(&text, p, &template, &JobInputs::default())
            .unwrap()
            .id
    };
    assert_eq!(id(&a), id(&b));
    assert_ne!(id(&a), id(&c));
    assert_eq!(
        corriere::job::job_id_with(&text, &a, &JobInputs::default()).unwrap(),
        id(&a)
    );
}

/// Writes a workbook of `CORRIERE_XLSX_ROWS` rows (default 1 000 000) to `CORRIERE_XLSX_OUT`,
/// the file README's memory figure reads: `fiscal_code;nome;anno` like the CSV benches, as
/// Excel stores it (shared strings).
#[test]
#[ignore = "writes a large file for README's memory figure"]
fn write_large_workbook_for_the_memory_figure() {
    let rows: u32 = std::env::var("CORRIERE_XLSX_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let out = std::env::var("CORRIERE_XLSX_OUT").expect("CORRIERE_XLSX_OUT names the file");
    let mut wb = Workbook::new();
    let ws = wb.add_worksheet_with_low_memory();
    for (c, h) in ["fiscal_code", "nome", "anno"].iter().enumerate() {
        ws.write_string(0, c as u16, *h).unwrap();
    }
    for i in 0..rows {
        let r = i + 1;
        ws.write_string(r, 0, synthetic_code(i)).unwrap();
        ws.write_string(r, 1, format!("Cittadino {i}")).unwrap();
        ws.write_number(r, 2, 2026).unwrap();
    }
    wb.save(&out).unwrap();
}

/// A fiscal code with a valid check character for every `i` (distinct for i < 26^3·10^4).
fn synthetic_code(i: u32) -> String {
    const ODD: [u32; 36] = [
        1, 0, 5, 7, 9, 13, 15, 17, 19, 21, 1, 0, 5, 7, 9, 13, 15, 17, 19, 21, 2, 4, 18, 20, 11, 3,
        6, 8, 12, 14, 16, 10, 22, 25, 24, 23,
    ];
    let l = |n: u32| char::from(b'A' + (n % 26) as u8);
    let body = format!(
        "{}{}{}MRA85T10A{:03}",
        l(i / 676),
        l(i / 26),
        l(i),
        (i / 17_576) % 1000
    );
    let sum: u32 = body
        .chars()
        .enumerate()
        .map(|(k, c)| {
            let idx = if c.is_ascii_digit() {
                c as u32 - '0' as u32
            } else {
                10 + c as u32 - 'A' as u32
            };
            if k % 2 == 0 {
                ODD[idx as usize]
            } else if c.is_ascii_digit() {
                c as u32 - '0' as u32
            } else {
                c as u32 - 'A' as u32
            }
        })
        .sum();
    format!("{body}{}", l(sum % 26))
}

#[test]
fn merged_cells_are_counted_for_the_dry_run_and_read_as_their_first_cell() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("unite.xlsx");
    {
        let mut wb = Workbook::new();
        let ws = wb.add_worksheet();
        for (c, h) in ["fiscal_code", "nome", "anno"].iter().enumerate() {
            ws.write_string(0, c as u16, *h).unwrap();
        }
        ws.write_string(1, 0, "RSSMRA85T10A562S").unwrap();
        ws.merge_range(1, 1, 1, 2, "Mario Rossi", &Format::new())
            .unwrap();
        wb.save(&path).unwrap();
    }
    let t = dir.path().join("t.toml");
    std::fs::write(
        &t,
        format!("subject = \"Avviso TARI {{{{anno}}}}\"\nmarkdown = \"{MD}\"\n"),
    )
    .unwrap();
    let template = Template::from_toml_file(&t).unwrap();
    let text = std::fs::read_to_string(&t).unwrap();
    let id = identify(&text, &path, &template, &JobInputs::default()).unwrap();
    assert_eq!(id.merged_cells, 1);
    let (used, rows) = ingest(&t, &path, &JobInputs::default());
    assert_eq!(value(&used, &rows[0], "nome"), "Mario Rossi");
    assert_eq!(value(&used, &rows[0], "anno"), "");
}

/// All the chunks of a report stream.
async fn collect(
    mut stream: futures::stream::BoxStream<
        'static,
        Result<bytes::Bytes, corriere::daemon::api::BackendError>,
    >,
) -> Vec<u8> {
    use futures::StreamExt;
    let mut out = Vec::new();
    while let Some(chunk) = stream.next().await {
        out.extend_from_slice(&chunk.unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_takes_an_uploaded_workbook_and_serves_its_report_as_xlsx() {
    use corriere::daemon::api::{Backend, Codes, Input, JobSpec, SubmitOptions, Submitted};
    use corriere::daemon::{Daemon, DaemonParts};
    use corriere::io_api::{ApiKey, IoClientConfig};
    use corriere::rate::{RateBudget, RateConfig, RateMode};
    use std::time::Duration;

    let fake = start_fake(fake_config(200)).await;
    let dir = tempfile::tempdir().unwrap();
    let campaign = write_campaign(dir.path(), &fake, 120, "none");
    let text = std::fs::read_to_string(&campaign.recipients).unwrap();
    let rows: Vec<Vec<String>> = text
        .lines()
        .skip(1)
        .map(|l| l.split(';').map(str::to_owned).collect())
        .collect();
    let xlsx = dir.path().join("lista.xlsx");
    write_text_workbook(&xlsx, "Lista", &["codice_fiscale", "nome", "anno"], &rows);

    let store = corriere::store::Store::open(&dir.path().join("store"))
        .await
        .unwrap();
    let budget = RateBudget::new(RateConfig {
        mode: RateMode::Unlimited,
        in_flight: 16,
    });
    let mut io = IoClientConfig::new(fake.base_url(), ApiKey::new(KEY));
    io.request_timeout = Duration::from_secs(5);
    let shutdown = tokio_util::sync::CancellationToken::new();
    let daemon = Daemon::start(
        DaemonParts {
            runtime: std::sync::Arc::new(corriere::runtime::Runtime::new(
                corriere::runtime::RuntimeParts {
                    store,
                    client: corriere::io_api::IoClient::new(io).unwrap(),
                    budget,
                    settings: Default::default(),
                    preflight: None,
                    feed: corriere::runtime::FeedAccess::Off,
                },
            )),
            feed_sync_at: None,
            uploads_dir: dir.path().join("uploads"),
            input_dirs: Vec::new(),
            upload_retention: Duration::from_secs(3600),
        },
        shutdown.clone(),
    )
    .await
    .unwrap();
    // Uploaded as a multipart body would be: the name tells the reader.
    let spec = JobSpec {
        template: Input::Bytes {
            name: "template.toml".to_owned(),
            bytes: std::fs::read(&campaign.template).unwrap().into(),
        },
        recipients: Input::Bytes {
            name: "lista.xlsx".to_owned(),
            bytes: std::fs::read(&xlsx).unwrap().into(),
        },
        options: SubmitOptions {
            sheet: Some("Lista".to_owned()),
            ..SubmitOptions::default()
        },
    };
    let id = match daemon.submit(spec, false).await.unwrap() {
        Submitted::Job { id, .. } => id,
        other => panic!("{other:?}"),
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let v = daemon.get(&id).await.unwrap();
        if v.state == corriere::daemon::api::JobState::Done {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{v:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let csv = collect(daemon.report(&id, Codes::Masked).await.unwrap()).await;
    let book = collect(daemon.report_xlsx(&id, Codes::Masked).await.unwrap()).await;
    let (csv_path, xlsx_path) = (dir.path().join("r.csv"), dir.path().join("r.xlsx"));
    std::fs::write(&csv_path, csv).unwrap();
    std::fs::write(&xlsx_path, book).unwrap();
    assert_eq!(xlsx_report_cells(&xlsx_path), csv_report_cells(&csv_path));
    check_report(&read_report(&csv_path), &campaign.expect, &[]);
    for i in 0..120 {
        assert!(
            fake.messages_for(&fake.population().citizen(i).fiscal_code) <= 1,
            "citizen {i}"
        );
    }
    assert!(fake.stats().messages_created > 80);
    shutdown.cancel();
    daemon.drain(Duration::from_secs(30)).await;
    fake.shutdown().await;
}
