//! The `samba-lm` binary end to end: init, score, info, and its errors on bad input.

use std::path::Path;
use std::process::{Command, Output};

fn samba_lm(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_samba-lm"))
        .args(args)
        .output()
        .expect("run samba-lm")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Runs a command that must fail cleanly: non-zero exit, no panic, an error naming `needle`.
fn fails_with(args: &[&str], needle: &str) {
    let out = samba_lm(args);
    let err = stderr(&out);
    assert!(
        !out.status.success(),
        "{args:?} succeeded: {}",
        stdout(&out)
    );
    assert!(!err.contains("panicked"), "{args:?} panicked: {err}");
    assert!(
        err.contains(needle),
        "{args:?}: error does not mention '{needle}': {err}"
    );
}

fn init_tiny(dir: &Path) {
    let out = samba_lm(&[
        "init",
        "--preset",
        "tiny",
        "--seed",
        "5",
        "--out",
        dir.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "init failed: {}", stderr(&out));
}

#[test]
fn init_then_score_reports_consistent_logprobs() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("tiny");
    init_tiny(&model);
    assert!(model.join("config.json").is_file() && model.join("model.safetensors").is_file());

    let out = samba_lm(&[
        "score",
        "--model",
        model.to_str().unwrap(),
        "--tokens",
        "1,2,3,4,5,60",
        "--json",
        "--device",
        "cpu",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("JSON report");
    let logprobs: Vec<f64> = report["token_logprobs"]
        .as_array()
        .expect("token_logprobs")
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    assert_eq!(logprobs.len(), 5, "one log-probability per next token");
    assert!(logprobs.iter().all(|&lp| lp < 0.0 && lp.is_finite()));
    let mean_nll = report["mean_nll"].as_f64().unwrap();
    let mean = -logprobs.iter().sum::<f64>() / 5.0;
    assert!((mean_nll - mean).abs() < 1e-9);
    assert!((report["perplexity"].as_f64().unwrap() - mean_nll.exp()).abs() < 1e-9);
    // A random tiny model is close to uniform over its 64 tokens.
    assert!((mean_nll - 64f64.ln()).abs() < 1.0, "mean_nll {mean_nll}");

    // The same input through the library gives the same numbers.
    let loaded = samba_model::checkpoint::load_model(&model).unwrap();
    let cpu = samba_cpu::CpuModel::from_loaded(loaded);
    let shape = samba_cpu::BatchShape { batch: 1, seq: 5 };
    let mut acts = cpu.activations(shape);
    cpu.forward(&mut acts, &[1, 2, 3, 4, 5]).unwrap();
    cpu.loss(&mut acts, &[2, 3, 4, 5, 60]).unwrap();
    for (lp, loss) in logprobs.iter().zip(&acts.losses) {
        assert!((lp + *loss as f64).abs() < 1e-6);
    }

    let table = samba_lm(&[
        "score",
        "--model",
        model.to_str().unwrap(),
        "--tokens",
        "1,2,3",
    ]);
    assert!(stdout(&table).contains("perplexity"));
}

#[test]
fn init_takes_shape_flags() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("custom");
    let args = [
        "init",
        "--preset",
        "tiny",
        "--layout",
        "mamba-swa-mlp",
        "--n-layer",
        "4",
        "--d-model",
        "64",
        "--heads",
        "8",
        "--kv-heads",
        "2",
        "--mlp-hidden",
        "128",
        "--window",
        "16",
        "--vocab",
        "256",
        "--out",
    ];
    let mut args = args.to_vec();
    args.push(model.to_str().unwrap());
    let out = samba_lm(&args);
    assert!(out.status.success(), "{}", stderr(&out));
    let config = samba_model::checkpoint::load_config(&model).unwrap();
    assert_eq!(config.layout, samba_model::Layout::MambaSwaMlp);
    assert_eq!(
        (
            config.n_layer,
            config.d_model,
            config.heads,
            config.kv_heads
        ),
        (4, 64, 8, 2)
    );
    assert_eq!(
        (
            config.head_dim,
            config.mlp_hidden,
            config.window,
            config.vocab
        ),
        (8, 128, 16, 256)
    );
    assert_eq!(config.dt_rank, 4, "dt_rank follows d_model: ceil(64 / 16)");
    let info = samba_lm(&["info", "--model", model.to_str().unwrap(), "--tensors"]);
    assert!(
        stdout(&info).contains("transformer.h.3.mb.A_log"),
        "{}",
        stdout(&info)
    );
}

#[test]
fn init_refuses_bad_flags_and_leaves_nothing_behind() {
    let tmp = tempfile::tempdir().unwrap();
    let out_dir = tmp.path().join("m");
    let out = out_dir.to_str().unwrap();
    fails_with(&["init", "--preset", "huge", "--out", out], "samba-421m");
    fails_with(
        &[
            "init",
            "--preset",
            "tiny",
            "--layout",
            "transformer",
            "--out",
            out,
        ],
        "mamba-swa-mlp",
    );
    fails_with(
        &[
            "init",
            "--preset",
            "tiny",
            "--heads",
            "3",
            "--kv-heads",
            "2",
            "--head-dim",
            "8",
            "--out",
            out,
        ],
        "kv_heads",
    );
    fails_with(
        &["init", "--preset", "tiny", "--dtype", "int8", "--out", out],
        "int8",
    );
    assert!(!out_dir.exists());

    std::fs::create_dir(&out_dir).unwrap();
    std::fs::write(out_dir.join("notes.txt"), "keep me").unwrap();
    fails_with(&["init", "--preset", "tiny", "--out", out], "not empty");
    let left: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left.len(), 1, "only the user's folder remains: {left:?}");
    assert_eq!(
        std::fs::read_to_string(out_dir.join("notes.txt")).unwrap(),
        "keep me"
    );
}

#[test]
fn score_rejects_bad_input_with_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("tiny");
    init_tiny(&model);
    let m = model.to_str().unwrap();
    fails_with(
        &["score", "--model", m, "--tokens", "1,2,64"],
        "token id 64",
    );
    fails_with(&["score", "--model", m, "--tokens", "1,x,3"], "'x'");
    fails_with(&["score", "--model", m, "--tokens", ""], "at least 2");
    fails_with(&["score", "--model", m, "--tokens", "7"], "at least 2");
    fails_with(
        &["score", "--model", m, "--text", "hello"],
        "tokenizer.json",
    );
    let missing = tmp.path().join("nope");
    fails_with(
        &[
            "score",
            "--model",
            missing.to_str().unwrap(),
            "--tokens",
            "1,2",
        ],
        "nope",
    );
    let binary = tmp.path().join("bytes.txt");
    std::fs::write(&binary, [0x66, 0x6f, 0xff, 0xfe]).unwrap();
    fails_with(
        &["score", "--model", m, "--file", binary.to_str().unwrap()],
        "not UTF-8",
    );
    let absent = tmp.path().join("absent.txt");
    fails_with(
        &["score", "--model", m, "--file", absent.to_str().unwrap()],
        "absent.txt",
    );

    // Weights that contradict the config: the error names the file and the tensor.
    let config_path = model.join("config.json");
    let text = std::fs::read_to_string(&config_path).unwrap();
    std::fs::write(
        &config_path,
        text.replace("\"n_layer\": 4", "\"n_layer\": 6"),
    )
    .unwrap();
    fails_with(
        &["score", "--model", m, "--tokens", "1,2"],
        "transformer.h.4",
    );
    std::fs::write(
        &config_path,
        text.replace("\"n_layer\": 4", "\"n_layer\": 4, \"dropout\": 0.1"),
    )
    .unwrap();
    fails_with(&["score", "--model", m, "--tokens", "1,2"], "dropout");
}

#[test]
fn score_streams_in_chunks_with_the_same_result() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("tiny");
    init_tiny(&model);
    let m = model.to_str().unwrap();
    // 40 tokens: five windows of the tiny preset.
    let tokens: Vec<String> = (0..40).map(|i| ((i * 37 + 11) % 64).to_string()).collect();
    let tokens = tokens.join(",");
    let logprobs = |chunk: &str| -> Vec<f64> {
        let out = samba_lm(&[
            "score", "--model", m, "--tokens", &tokens, "--json", "--chunk", chunk, "--device",
            "cpu",
        ]);
        assert!(out.status.success(), "{}", stderr(&out));
        let report: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
        report["token_logprobs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect()
    };
    let whole = logprobs("512");
    assert_eq!(whole.len(), 39);
    for chunk in ["1", "3", "16"] {
        let parts = logprobs(chunk);
        let worst = whole
            .iter()
            .zip(&parts)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        assert!(worst < 1e-5, "chunk {chunk}: differs by {worst}");
    }
    fails_with(
        &["score", "--model", m, "--tokens", "1,2", "--chunk", "0"],
        "chunk",
    );
}

/// A tiny model with a byte-level BPE tokenizer trained on a little text.
fn tiny_with_tokenizer(dir: &Path) -> std::path::PathBuf {
    let text = dir.join("corpus.txt");
    let body =
        "The quick brown fox jumps over the lazy dog. To be, or not to be, that is the question.\n";
    std::fs::write(&text, body.repeat(50)).unwrap();
    let tokenizer = dir.join("tokenizer.json");
    let out = samba_lm(&[
        "tokenizer",
        "train",
        "--input",
        text.to_str().unwrap(),
        "--vocab-size",
        "300",
        "--out",
        tokenizer.to_str().unwrap(),
        "--quiet",
    ]);
    assert!(out.status.success(), "tokenizer train: {}", stderr(&out));
    let model = dir.join("model");
    let out = samba_lm(&[
        "init",
        "--preset",
        "tiny",
        "--vocab",
        "300",
        "--tokenizer",
        tokenizer.to_str().unwrap(),
        "--out",
        model.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "init: {}", stderr(&out));
    model
}

#[test]
fn generate_is_reproducible_per_seed_and_batches_prompts() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_with_tokenizer(tmp.path());
    let m = model.to_str().unwrap();
    let run = |seed: &str| {
        let out = samba_lm(&[
            "generate",
            "--model",
            m,
            "--prompt",
            "To be",
            "--max-tokens",
            "12",
            "--seed",
            seed,
        ]);
        assert!(out.status.success(), "{}", stderr(&out));
        assert!(
            stderr(&out).contains("tokens/s"),
            "stats on stderr: {}",
            stderr(&out)
        );
        stdout(&out)
    };
    assert_eq!(run("7"), run("7"));
    assert_ne!(run("7"), run("8"));

    let batch = tmp.path().join("prompts.jsonl");
    std::fs::write(
        &batch,
        "{\"prompt\": \"The quick\"}\n\n{\"prompt\": \"To be\"}\n",
    )
    .unwrap();
    let out = samba_lm(&[
        "generate",
        "--model",
        m,
        "--batch-file",
        batch.to_str().unwrap(),
        "--max-tokens",
        "5",
        "--temperature",
        "0",
        "--device",
        "cpu",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let lines: Vec<serde_json::Value> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[1]["prompt"], "To be");
    assert!(lines.iter().all(|l| l["tokens"].as_u64().unwrap() <= 5));

    // Greedy decoding of a prompt alone equals its row in the batch.
    let alone = samba_lm(&[
        "generate",
        "--model",
        m,
        "--prompt",
        "To be",
        "--max-tokens",
        "5",
        "--temperature",
        "0",
        "--device",
        "cpu",
    ]);
    let alone = stdout(&alone);
    assert_eq!(
        alone.trim_end_matches('\n'),
        lines[1]["completion"].as_str().unwrap()
    );

    // Text scoring goes through the same tokenizer.
    let score = samba_lm(&[
        "score",
        "--model",
        m,
        "--text",
        "To be, or not to be",
        "--summary",
    ]);
    assert!(stdout(&score).contains("perplexity"), "{}", stderr(&score));
}

#[test]
fn generate_rejects_bad_options_before_any_work() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_with_tokenizer(tmp.path());
    let m = model.to_str().unwrap();
    fails_with(
        &["generate", "--model", m, "--prompt", "x", "--top-p", "1.5"],
        "top_p",
    );
    fails_with(
        &["generate", "--model", m, "--prompt", "x", "--top-p", "0"],
        "top_p",
    );
    fails_with(
        &[
            "generate",
            "--model",
            m,
            "--prompt",
            "x",
            "--temperature",
            "-1",
        ],
        "temperature",
    );
    fails_with(&["generate", "--model", m, "--prompt", ""], "empty");
    let missing = tmp.path().join("missing.txt");
    fails_with(
        &[
            "generate",
            "--model",
            m,
            "--prompt-file",
            missing.to_str().unwrap(),
        ],
        "missing.txt",
    );
    let latin1 = tmp.path().join("latin1.txt");
    std::fs::write(&latin1, [0x63, 0x61, 0x66, 0xe9]).unwrap();
    fails_with(
        &[
            "generate",
            "--model",
            m,
            "--prompt-file",
            latin1.to_str().unwrap(),
        ],
        "not UTF-8",
    );
    let batch = tmp.path().join("bad.jsonl");
    std::fs::write(&batch, "{\"prompt\": \"ok\"}\n{\"text\": \"no prompt\"}\n").unwrap();
    fails_with(
        &[
            "generate",
            "--model",
            m,
            "--batch-file",
            batch.to_str().unwrap(),
        ],
        "line 2",
    );
    // A model folder without a tokenizer cannot take text.
    let bare = tmp.path().join("bare");
    init_tiny(&bare);
    fails_with(
        &[
            "generate",
            "--model",
            bare.to_str().unwrap(),
            "--prompt",
            "x",
        ],
        "tokenizer.json",
    );
}

#[test]
fn prepare_train_resume_and_plot_from_the_cli() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_with_tokenizer(tmp.path());
    let tokenizer = model.join("tokenizer.json");
    let corpus = tmp.path().join("docs");
    std::fs::create_dir(&corpus).unwrap();
    for i in 0..40 {
        let doc = format!("Document {i}. The quick brown fox jumps over the lazy dog {i} times. To be, or not to be.\n");
        std::fs::write(corpus.join(format!("{i}.txt")), doc.repeat(4)).unwrap();
    }
    let data = tmp.path().join("data");
    let out = samba_lm(&[
        "data",
        "prepare",
        "--input",
        corpus.to_str().unwrap(),
        "--tokenizer",
        tokenizer.to_str().unwrap(),
        "--out",
        data.to_str().unwrap(),
        "--val-fraction",
        "0.2",
        "--quiet",
    ]);
    assert!(out.status.success(), "prepare: {}", stderr(&out));
    let stats = samba_lm(&["data", "stats", data.to_str().unwrap(), "--json"]);
    assert!(stats.status.success(), "stats: {}", stderr(&stats));

    let run = tmp.path().join("run");
    let train = |extra: &[&str]| {
        let mut args = vec![
            "train",
            "--model",
            model.to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
            "--out",
            run.to_str().unwrap(),
            "--steps",
            "6",
            "--seq-len",
            "16",
            "--micro-batch",
            "2",
            "--save-every",
            "3",
            "--eval-every",
            "3",
            "--eval-windows",
            "1",
            "--no-progress",
        ];
        args.extend_from_slice(extra);
        samba_lm(&args)
    };
    let out = train(&[]);
    assert!(out.status.success(), "train: {}", stderr(&out));
    let metrics = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    let records: Vec<serde_json::Value> = metrics
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(records.len() >= 6, "{metrics}");
    // A finished run refuses to start again in the same folder, and --resume has nothing left to do.
    assert!(!train(&[]).status.success());
    let resumed = train(&["--resume"]);
    assert!(resumed.status.success(), "resume: {}", stderr(&resumed));

    let svg = tmp.path().join("curves.svg");
    let out = samba_lm(&[
        "plot",
        run.to_str().unwrap(),
        "--out",
        svg.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "plot: {}", stderr(&out));
    assert!(std::fs::read_to_string(&svg).unwrap().contains("<svg"));
}

#[test]
fn device_flag_is_checked_and_cuda_without_a_gpu_is_a_clear_error() {
    let args = [
        "bench",
        "decode",
        "--preset",
        "tiny",
        "--context",
        "4",
        "--steps",
        "1",
        "--device",
    ];
    fn with<'a>(args: &[&'a str], device: &'a str) -> Vec<&'a str> {
        let mut a = args.to_vec();
        a.push(device);
        a
    }
    fails_with(&with(&args, "gpu"), "expected auto, cpu, cuda or cuda:N");
    fails_with(&with(&args, "cuda:x"), "cuda:N");
    if !samba_cuda::cuda_available() {
        fails_with(&with(&args, "cuda"), "--device cuda:0");
        // auto falls back to the CPU.
        let out = samba_lm(&with(&args, "auto"));
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let out = samba_lm(&with(&args, "cpu"));
    assert!(out.status.success(), "{}", stderr(&out));
}

/// Every inference command (score, generate, each eval) on its inputs: the same arguments run
/// with any `--device`.
fn inference_commands(dir: &Path, m: &str) -> Vec<(&'static str, Vec<String>)> {
    let doc = dir.join("doc.txt");
    std::fs::write(
        &doc,
        "To be, or not to be, that is the question. ".repeat(8),
    )
    .unwrap();
    let task = dir.join("task.jsonl");
    std::fs::write(
        &task,
        "{\"context\": \"The quick brown\", \"choices\": [\" fox\", \" dog\"], \"answer\": 0}\n",
    )
    .unwrap();
    let own = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let doc = doc.to_str().unwrap();
    let task = task.to_str().unwrap();
    vec![
        (
            "score",
            own(&["score", "--model", m, "--text", "To be, or not"]),
        ),
        (
            "generate",
            own(&[
                "generate",
                "--model",
                m,
                "--prompt",
                "To be",
                "--max-tokens",
                "3",
            ]),
        ),
        (
            "eval ppl",
            own(&[
                "eval",
                "ppl",
                "--model",
                m,
                "--file",
                doc,
                "--lengths",
                "32",
            ]),
        ),
        (
            "eval passkey",
            own(&[
                "eval",
                "passkey",
                "--model",
                m,
                "--lengths",
                "260",
                "--depths",
                "2",
                "--keys",
                "1",
            ]),
        ),
        (
            "eval phonebook",
            own(&[
                "eval",
                "phonebook",
                "--model",
                m,
                "--sizes",
                "2",
                "--trials",
                "1",
            ]),
        ),
        (
            "eval choice",
            own(&["eval", "choice", "--model", m, "--tasks", task]),
        ),
    ]
}

fn with_device(args: &[String], extra: &[&str]) -> Vec<String> {
    let mut a = args.to_vec();
    a.extend(extra.iter().map(|s| s.to_string()));
    a
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

#[test]
fn inference_commands_take_device_and_refuse_a_missing_gpu_clearly() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_with_tokenizer(tmp.path());
    let m = model.to_str().unwrap();
    for (name, args) in inference_commands(tmp.path(), m) {
        let out = samba_lm(&strs(&with_device(&args, &["--device", "cpu"])));
        assert!(
            out.status.success(),
            "{name} --device cpu: {}",
            stderr(&out)
        );
        assert!(
            stderr(&out).contains("device: cpu"),
            "{name} says where it runs: {}",
            stderr(&out)
        );
        fails_with(
            &strs(&with_device(&args, &["--device", "gpu"])),
            "expected auto, cpu, cuda or cuda:N",
        );
        fails_with(
            &strs(&with_device(&args, &["--gpu-dtype", "f16"])),
            "bf16 or f32",
        );
        if !samba_cuda::cuda_available() {
            fails_with(
                &strs(&with_device(&args, &["--device", "cuda"])),
                "--device cuda:0",
            );
            fails_with(
                &strs(&with_device(&args, &["--device", "cuda:1"])),
                "--device cuda:1",
            );
            // auto falls back to the CPU.
            let out = samba_lm(&strs(&args));
            assert!(out.status.success(), "{name} (auto): {}", stderr(&out));
            assert!(stderr(&out).contains("device: cpu"), "{}", stderr(&out));
        }
    }
}

#[test]
fn eval_reports_record_the_device() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_with_tokenizer(tmp.path());
    let m = model.to_str().unwrap();
    let report = tmp.path().join("ppl.json");
    let (_, ppl) = inference_commands(tmp.path(), m)
        .into_iter()
        .find(|(name, _)| *name == "eval ppl")
        .unwrap();
    let out = samba_lm(&strs(&with_device(
        &ppl,
        &["--device", "cpu", "--out", report.to_str().unwrap()],
    )));
    assert!(out.status.success(), "{}", stderr(&out));
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert_eq!(json["meta"]["device"], "cpu");
    assert_eq!(json["meta"]["options"]["common"]["device"], "cpu");
    assert_eq!(json["meta"]["options"]["common"]["gpu_dtype"], "bf16");
}

#[test]
fn training_runs_on_the_cpu_only_for_now() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    let args = |device: &str| {
        vec![
            "train".to_string(),
            "--preset".into(),
            "tiny".into(),
            "--data".into(),
            tmp.path().join("no-data").to_str().unwrap().into(),
            "--out".into(),
            run.to_str().unwrap().into(),
            "--device".into(),
            device.into(),
        ]
    };
    for device in ["cuda", "cuda:0"] {
        fails_with(&strs(&args(device)), "training runs on the CPU only");
    }
    fails_with(&strs(&args("gpu")), "auto or cpu");
    // cpu and auto get past the device check to the (missing) data.
    for device in ["cpu", "auto"] {
        fails_with(&strs(&args(device)), "no-data");
    }
}

/// On a machine with a GPU: the inference commands run there, and score agrees with the CPU
/// (bf16 within 8e-2 nats, f32 storage within 1e-3). Skipped without a GPU.
#[test]
fn on_a_gpu_the_commands_run_there_and_agree_with_the_cpu() {
    if !samba_cuda::cuda_available() {
        eprintln!("skipped: no CUDA device");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_with_tokenizer(tmp.path());
    let m = model.to_str().unwrap();
    for (name, args) in inference_commands(tmp.path(), m) {
        let out = samba_lm(&strs(&with_device(&args, &["--device", "cuda"])));
        assert!(
            out.status.success(),
            "{name} --device cuda: {}",
            stderr(&out)
        );
        assert!(
            stderr(&out).contains("device: cuda:0 "),
            "{name}: {}",
            stderr(&out)
        );
    }
    let tokens: Vec<String> = (0..300)
        .map(|i| ((i * 37 + 11) % 300).to_string())
        .collect();
    let tokens = tokens.join(",");
    let score = |extra: &[&str]| -> Vec<f64> {
        let mut args = vec![
            "score", "--model", m, "--tokens", &tokens, "--json", "--chunk", "64",
        ];
        args.extend(extra);
        let out = samba_lm(&args);
        assert!(out.status.success(), "{extra:?}: {}", stderr(&out));
        let report: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
        report["token_logprobs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect()
    };
    let cpu = score(&["--device", "cpu"]);
    for (dtype, tol) in [("bf16", 8e-2), ("f32", 1e-3)] {
        let gpu = score(&["--device", "cuda", "--gpu-dtype", dtype]);
        let max = gpu
            .iter()
            .zip(&cpu)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        eprintln!("score on cuda {dtype} vs cpu: max |diff| {max:.2e}");
        assert!(
            max <= tol,
            "cuda {dtype} vs cpu: max |diff| {max:.3e} > {tol:.0e}"
        );
    }
}
