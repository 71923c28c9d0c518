//! Model folders: save/load round trips in every storage type, and the error a user gets for each
//! kind of broken folder (variant, file and tensor or value named).

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use half::{bf16, f16};
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};
use samba_model::checkpoint::{
    load_config, load_model, save_model, SaveDtype, CONFIG_FILE, TOKENIZER_FILE, WEIGHTS_FILE,
};
use samba_model::config::{Config, Layout};
use samba_model::error::ModelError;
use samba_model::init::init_params;
use samba_model::layout::ParamLayout;
use samba_model::preset::preset_with_layout;

struct Model {
    config: Config,
    layout: ParamLayout,
    params: Vec<f32>,
}

fn model(layout: Layout) -> Model {
    let config = preset_with_layout("tiny", layout).unwrap();
    let layout = ParamLayout::new(&config);
    let mut params = init_params(&layout, 11);
    // Values that stress the conversions: tiny (f16 subnormal), large, negative zero.
    params[0] = 1e-7;
    params[1] = -3.0e4;
    params[2] = -0.0;
    Model {
        config,
        layout,
        params,
    }
}

/// Saves `m` to `root/name` and returns the folder.
fn save(root: &Path, name: &str, m: &Model, dtype: SaveDtype) -> PathBuf {
    let dir = root.join(name);
    save_model(&dir, &m.config, &m.layout, &m.params, dtype, None).unwrap();
    dir
}

/// One stored tensor, owned, for rewriting files.
#[derive(Clone)]
struct Entry {
    name: String,
    dtype: Dtype,
    shape: Vec<usize>,
    bytes: Vec<u8>,
}

fn read_entries(path: &Path) -> Vec<Entry> {
    let bytes = std::fs::read(path).unwrap();
    let file = SafeTensors::deserialize(&bytes).unwrap();
    let mut entries: Vec<Entry> = file
        .tensors()
        .into_iter()
        .map(|(name, view)| Entry {
            name,
            dtype: view.dtype(),
            shape: view.shape().to_vec(),
            bytes: view.data().to_vec(),
        })
        .collect();
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    entries
}

fn write_entries(path: &Path, entries: &[Entry]) {
    let views: Vec<(String, TensorView<'_>)> = entries
        .iter()
        .map(|e| {
            let view = TensorView::new(e.dtype, e.shape.clone(), &e.bytes).unwrap();
            (e.name.clone(), view)
        })
        .collect();
    safetensors::tensor::serialize_to_file(views, None, path).unwrap();
}

/// Rewrites the weights of a model folder through `edit`.
fn rewrite(dir: &Path, edit: impl FnOnce(&mut Vec<Entry>)) {
    let path = dir.join(WEIGHTS_FILE);
    let mut entries = read_entries(&path);
    edit(&mut entries);
    write_entries(&path, &entries);
}

fn entry<'a>(entries: &'a mut [Entry], name: &str) -> &'a mut Entry {
    entries
        .iter_mut()
        .find(|e| e.name == name)
        .unwrap_or_else(|| panic!("{name} not in the file"))
}

fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

fn f32_values(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

fn write_config(dir: &Path, config: &Config) {
    std::fs::write(dir.join(CONFIG_FILE), config.to_json()).unwrap();
}

/// The error of loading `dir`, with the checks every load error must pass: the message names
/// the file at fault and each of `mentions`.
fn load_error(dir: &Path, file: &Path, mentions: &[&str]) -> ModelError {
    let err = match load_model(dir) {
        Ok(_) => panic!("{} loaded", dir.display()),
        Err(e) => e,
    };
    let msg = err.to_string();
    assert!(
        msg.contains(&file.display().to_string()),
        "message does not name {}: {msg}",
        file.display()
    );
    for m in mentions {
        assert!(msg.contains(m), "message does not mention '{m}': {msg}");
    }
    err
}

fn listing(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

// ---- round trips -------------------------------------------------------------------------

#[test]
fn f32_round_trip_is_bit_exact_for_every_layout() {
    let root = tempfile::tempdir().unwrap();
    for layout in Layout::ALL {
        let m = model(layout);
        let dir = save(root.path(), layout.name(), &m, SaveDtype::F32);
        let loaded = load_model(&dir).unwrap();
        assert_eq!(loaded.config, m.config, "{layout}");
        assert_eq!(loaded.layout.numel, m.layout.numel);
        assert_eq!(loaded.params.len(), m.params.len());
        let exact = loaded
            .params
            .iter()
            .zip(&m.params)
            .all(|(a, b)| a.to_bits() == b.to_bits());
        assert!(exact, "{layout}: f32 round trip is not bit-exact");
        assert!(loaded.tokenizer.is_none());
        assert_eq!(
            listing(&dir),
            BTreeSet::from([CONFIG_FILE.into(), WEIGHTS_FILE.into()])
        );
    }
}

/// Saves in `dtype`, loads back, and checks every value against `round` and a relative bound.
fn check_rounded_round_trip(dtype: SaveDtype, stored: Dtype, round: fn(f32) -> f32, rel: f32) {
    let root = tempfile::tempdir().unwrap();
    for layout in [Layout::Samba, Layout::Llama] {
        let m = model(layout);
        let dir = save(root.path(), layout.name(), &m, dtype);
        for e in read_entries(&dir.join(WEIGHTS_FILE)) {
            assert_eq!(e.dtype, stored, "{}", e.name);
        }
        let loaded = load_model(&dir).unwrap();
        for (i, (&got, &orig)) in loaded.params.iter().zip(&m.params).enumerate() {
            assert_eq!(got.to_bits(), round(orig).to_bits(), "{layout} element {i}");
            // Round to nearest: half an ulp, plus half the smallest subnormal.
            assert!(
                (got - orig).abs() <= orig.abs() * rel + 3e-8,
                "{layout} element {i}: {orig} -> {got}"
            );
        }
        // Values that cannot be exact still are not all flushed to a constant.
        assert_ne!(loaded.params, m.params);
    }
}

#[test]
fn bf16_round_trip_rounds_like_bf16() {
    check_rounded_round_trip(
        SaveDtype::Bf16,
        Dtype::BF16,
        |v| bf16::from_f32(v).to_f32(),
        2f32.powi(-8),
    );
}

#[test]
fn f16_round_trip_rounds_like_f16() {
    check_rounded_round_trip(
        SaveDtype::F16,
        Dtype::F16,
        |v| f16::from_f32(v).to_f32(),
        2f32.powi(-11),
    );
}

#[test]
fn tied_model_saves_both_keys_with_equal_values() {
    let root = tempfile::tempdir().unwrap();
    let m = model(Layout::Samba);
    assert!(m.config.tied_embeddings);
    let dir = save(root.path(), "tied", &m, SaveDtype::F32);
    let entries = read_entries(&dir.join(WEIGHTS_FILE));
    let names: BTreeSet<&str> = entries.iter().map(|e| e.name.as_str()).collect();
    let mut expected: BTreeSet<&str> = m.layout.tensors.iter().map(|t| t.name.as_str()).collect();
    expected.insert("lm_head.weight");
    assert_eq!(names, expected);
    let wte = entries
        .iter()
        .find(|e| e.name == "transformer.wte.weight")
        .unwrap();
    let head = entries.iter().find(|e| e.name == "lm_head.weight").unwrap();
    assert_eq!(head.shape, vec![m.config.vocab, m.config.d_model]);
    assert_eq!(head.shape, wte.shape);
    assert_eq!(head.bytes, wte.bytes);
    assert_eq!(
        f32_values(&wte.bytes),
        m.layout.slice(&m.params, m.layout.wte)
    );
    // Shapes in the file are the layout's.
    for t in &m.layout.tensors {
        let e = entries.iter().find(|e| e.name == t.name).unwrap();
        assert_eq!(e.shape, t.shape, "{}", t.name);
    }
    // PyTorch-side loaders want the format tag.
    let bytes = std::fs::read(dir.join(WEIGHTS_FILE)).unwrap();
    let (_, metadata) = SafeTensors::read_metadata(&bytes).unwrap();
    let tags = metadata.metadata().clone().unwrap_or_default();
    assert_eq!(tags.get("format").map(String::as_str), Some("pt"));
}

#[test]
fn untied_model_saves_its_own_lm_head() {
    let root = tempfile::tempdir().unwrap();
    let m = model(Layout::Llama);
    assert!(!m.config.tied_embeddings);
    let dir = save(root.path(), "untied", &m, SaveDtype::F32);
    let entries = read_entries(&dir.join(WEIGHTS_FILE));
    let names: BTreeSet<&str> = entries.iter().map(|e| e.name.as_str()).collect();
    let expected: BTreeSet<&str> = m.layout.tensors.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, expected);
    let head = m.layout.lm_head.unwrap();
    let stored = entries.iter().find(|e| e.name == "lm_head.weight").unwrap();
    assert_eq!(f32_values(&stored.bytes), m.layout.slice(&m.params, head));
    assert_ne!(
        m.layout.slice(&m.params, head),
        m.layout.slice(&m.params, m.layout.wte)
    );
    let loaded = load_model(&dir).unwrap();
    assert_eq!(loaded.params, m.params);
}

#[test]
fn tied_file_without_lm_head_still_loads() {
    // Only transformer.wte.weight is a parameter; the lm_head copy is for other loaders.
    let root = tempfile::tempdir().unwrap();
    let m = model(Layout::Samba);
    let dir = save(root.path(), "m", &m, SaveDtype::F32);
    rewrite(&dir, |entries| {
        entries.retain(|e| e.name != "lm_head.weight")
    });
    assert_eq!(load_model(&dir).unwrap().params, m.params);
}

#[test]
fn mixed_storage_types_load() {
    let root = tempfile::tempdir().unwrap();
    let m = model(Layout::Samba);
    let dir = save(root.path(), "m", &m, SaveDtype::F32);
    let name = "transformer.h.0.attn.x_proj.weight";
    rewrite(&dir, |entries| {
        let e = entry(entries, name);
        let values = f32_values(&e.bytes);
        e.dtype = Dtype::BF16;
        e.bytes = values
            .iter()
            .flat_map(|v| bf16::from_f32(*v).to_le_bytes())
            .collect();
    });
    let loaded = load_model(&dir).unwrap();
    let id = m.layout.find(name).unwrap();
    for (a, b) in m
        .layout
        .slice(&loaded.params, id)
        .iter()
        .zip(m.layout.slice(&m.params, id))
    {
        assert_eq!(*a, bf16::from_f32(*b).to_f32());
    }
    let ln_f = m.layout.ln_f;
    assert_eq!(
        m.layout.slice(&loaded.params, ln_f),
        m.layout.slice(&m.params, ln_f)
    );
}

// ---- saving --------------------------------------------------------------------------------

#[test]
fn tokenizer_is_copied_when_given() {
    let root = tempfile::tempdir().unwrap();
    let m = model(Layout::Samba);
    let src = root.path().join("my-tokenizer.json");
    std::fs::write(&src, "{\"model\": {\"type\": \"BPE\"}}").unwrap();
    let dir = root.path().join("with-tok");
    save_model(
        &dir,
        &m.config,
        &m.layout,
        &m.params,
        SaveDtype::F32,
        Some(&src),
    )
    .unwrap();
    assert_eq!(
        std::fs::read(dir.join(TOKENIZER_FILE)).unwrap(),
        std::fs::read(&src).unwrap()
    );
    assert!(src.is_file(), "the source tokenizer must stay");
    let loaded = load_model(&dir).unwrap();
    assert_eq!(loaded.tokenizer, Some(dir.join(TOKENIZER_FILE)));

    let bare = save(root.path(), "without-tok", &m, SaveDtype::F32);
    assert!(!bare.join(TOKENIZER_FILE).exists());
    assert_eq!(load_model(&bare).unwrap().tokenizer, None);
}

#[test]
fn save_refuses_a_non_empty_folder_and_leaves_it_alone() {
    let root = tempfile::tempdir().unwrap();
    let m = model(Layout::Samba);
    let dir = root.path().join("taken");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("notes.txt"), "mine").unwrap();
    let before = listing(root.path());
    let err = save_model(&dir, &m.config, &m.layout, &m.params, SaveDtype::F32, None).unwrap_err();
    assert!(matches!(err, ModelError::Io { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains(&dir.display().to_string()), "{msg}");
    assert!(msg.contains("not empty"), "{msg}");
    assert_eq!(listing(root.path()), before);
    assert_eq!(listing(&dir), BTreeSet::from(["notes.txt".to_string()]));
    assert_eq!(
        std::fs::read_to_string(dir.join("notes.txt")).unwrap(),
        "mine"
    );
}

#[test]
fn save_refuses_a_path_that_is_a_file() {
    let root = tempfile::tempdir().unwrap();
    let m = model(Layout::Samba);
    let path = root.path().join("model");
    std::fs::write(&path, "not a folder").unwrap();
    let err = save_model(&path, &m.config, &m.layout, &m.params, SaveDtype::F32, None).unwrap_err();
    assert!(
        err.to_string().contains(&path.display().to_string()),
        "{err}"
    );
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "not a folder");
    assert_eq!(listing(root.path()), BTreeSet::from(["model".to_string()]));
}

#[test]
fn failed_save_leaves_nothing_behind() {
    let root = tempfile::tempdir().unwrap();
    let m = model(Layout::Samba);
    std::fs::write(root.path().join("other.txt"), "x").unwrap();
    let before = listing(root.path());
    // The tokenizer is copied last, after config and weights are written to the temporary folder.
    let missing = root.path().join("no-such-tokenizer.json");
    let dir = root.path().join("out");
    let err = save_model(
        &dir,
        &m.config,
        &m.layout,
        &m.params,
        SaveDtype::F32,
        Some(&missing),
    )
    .unwrap_err();
    assert!(matches!(err, ModelError::Io { .. }), "{err:?}");
    assert!(err.to_string().contains("no-such-tokenizer.json"), "{err}");
    assert_eq!(
        listing(root.path()),
        before,
        "a failed save left files behind"
    );

    // Into an existing empty folder: the folder stays, empty.
    std::fs::create_dir(&dir).unwrap();
    let before = listing(root.path());
    save_model(
        &dir,
        &m.config,
        &m.layout,
        &m.params,
        SaveDtype::F32,
        Some(&missing),
    )
    .unwrap_err();
    assert_eq!(listing(root.path()), before);
    assert!(listing(&dir).is_empty());
}

#[test]
fn save_accepts_an_empty_existing_folder() {
    let root = tempfile::tempdir().unwrap();
    let m = model(Layout::Samba);
    let dir = root.path().join("empty");
    std::fs::create_dir(&dir).unwrap();
    save_model(&dir, &m.config, &m.layout, &m.params, SaveDtype::Bf16, None).unwrap();
    assert_eq!(
        listing(&dir),
        BTreeSet::from([CONFIG_FILE.into(), WEIGHTS_FILE.into()])
    );
    assert_eq!(listing(root.path()), BTreeSet::from(["empty".to_string()]));
    load_model(&dir).unwrap();
}

#[test]
fn save_creates_missing_parent_folders() {
    let root = tempfile::tempdir().unwrap();
    let m = model(Layout::Samba);
    let dir = root.path().join("a").join("b").join("model");
    save_model(&dir, &m.config, &m.layout, &m.params, SaveDtype::F32, None).unwrap();
    assert_eq!(load_model(&dir).unwrap().params, m.params);
    assert_eq!(
        listing(&root.path().join("a").join("b")),
        BTreeSet::from(["model".to_string()])
    );
}

// ---- loading broken folders --------------------------------------------------------------

#[test]
fn missing_config_json() {
    let root = tempfile::tempdir().unwrap();
    let dir = save(root.path(), "m", &model(Layout::Samba), SaveDtype::F32);
    let config = dir.join(CONFIG_FILE);
    std::fs::remove_file(&config).unwrap();
    let err = load_error(&dir, &config, &[]);
    assert!(matches!(err, ModelError::Io { .. }), "{err:?}");
    assert!(matches!(load_config(&dir), Err(ModelError::Io { .. })));
}

#[test]
fn config_json_with_an_unexpected_key() {
    let root = tempfile::tempdir().unwrap();
    let dir = save(root.path(), "m", &model(Layout::Samba), SaveDtype::F32);
    let config = dir.join(CONFIG_FILE);
    let text = std::fs::read_to_string(&config).unwrap();
    let text = text.replacen('{', "{\n  \"n_positions\": 4096,", 1);
    std::fs::write(&config, text).unwrap();
    let err = load_error(&dir, &config, &["n_positions"]);
    assert!(matches!(err, ModelError::ConfigJson { .. }), "{err:?}");
}

#[test]
fn config_json_with_an_invalid_value() {
    let root = tempfile::tempdir().unwrap();
    let m = model(Layout::Samba);
    let dir = save(root.path(), "m", &m, SaveDtype::F32);
    let mut config = m.config.clone();
    config.kv_heads = 3;
    write_config(&dir, &config);
    let err = load_error(&dir, &dir.join(CONFIG_FILE), &["kv_heads"]);
    assert!(matches!(err, ModelError::ConfigJson { .. }), "{err:?}");
}

#[test]
fn missing_tensor() {
    let root = tempfile::tempdir().unwrap();
    let dir = save(root.path(), "m", &model(Layout::Samba), SaveDtype::F32);
    let name = "transformer.h.1.attn.proj.weight";
    rewrite(&dir, |entries| entries.retain(|e| e.name != name));
    let err = load_error(&dir, &dir.join(WEIGHTS_FILE), &[name]);
    assert!(
        matches!(err, ModelError::MissingTensor { name: ref n, .. } if n == name),
        "{err:?}"
    );
}

#[test]
fn untied_model_without_lm_head() {
    let root = tempfile::tempdir().unwrap();
    let dir = save(root.path(), "m", &model(Layout::Llama), SaveDtype::F32);
    rewrite(&dir, |entries| {
        entries.retain(|e| e.name != "lm_head.weight")
    });
    let err = load_error(&dir, &dir.join(WEIGHTS_FILE), &["lm_head.weight"]);
    assert!(matches!(err, ModelError::MissingTensor { .. }), "{err:?}");
}

#[test]
fn unexpected_extra_tensor() {
    let root = tempfile::tempdir().unwrap();
    let dir = save(root.path(), "m", &model(Layout::Samba), SaveDtype::F32);
    let name = "transformer.h.0.attn.in_proj.bias";
    rewrite(&dir, |entries| {
        entries.push(Entry {
            name: name.into(),
            dtype: Dtype::F32,
            shape: vec![128],
            bytes: f32_bytes(&[0.0; 128]),
        })
    });
    let err = load_error(&dir, &dir.join(WEIGHTS_FILE), &[name]);
    assert!(
        matches!(err, ModelError::UnexpectedTensor { name: ref n, .. } if n == name),
        "{err:?}"
    );
}

#[test]
fn wrong_shape() {
    let root = tempfile::tempdir().unwrap();
    let dir = save(root.path(), "m", &model(Layout::Samba), SaveDtype::F32);
    let name = "transformer.h.0.attn.x_proj.weight"; // [R + 2N, E] = [18, 64]
    rewrite(&dir, |entries| entry(entries, name).shape = vec![64, 18]);
    let err = load_error(
        &dir,
        &dir.join(WEIGHTS_FILE),
        &[name, "[64, 18]", "[18, 64]"],
    );
    assert!(
        matches!(err, ModelError::WrongShape { ref found, ref expected, .. }
            if found == &vec![64, 18] && expected == &vec![18, 64]),
        "{err:?}"
    );
}

#[test]
fn wrong_dtype() {
    for (dtype, width, label) in [
        (Dtype::I32, 4, "I32"),
        (Dtype::F64, 8, "F64"),
        (Dtype::U8, 1, "U8"),
    ] {
        let root = tempfile::tempdir().unwrap();
        let dir = save(root.path(), "m", &model(Layout::Samba), SaveDtype::F32);
        let name = "transformer.h.1.norm_2.weight";
        rewrite(&dir, |entries| {
            let e = entry(entries, name);
            e.dtype = dtype;
            e.bytes = vec![0; e.shape.iter().product::<usize>() * width];
        });
        let err = load_error(&dir, &dir.join(WEIGHTS_FILE), &[name, label]);
        assert!(matches!(err, ModelError::WrongDtype { .. }), "{err:?}");
    }
}

#[test]
fn truncated_weights_file() {
    let root = tempfile::tempdir().unwrap();
    let dir = save(root.path(), "m", &model(Layout::Samba), SaveDtype::F32);
    let path = dir.join(WEIGHTS_FILE);
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let err = load_error(&dir, &path, &["truncated"]);
    assert!(matches!(err, ModelError::Safetensors { .. }), "{err:?}");
    // The message names the first tensor whose bytes are gone.
    let msg = err.to_string();
    assert!(msg.contains("tensor 'transformer."), "{msg}");

    // Cut inside the header, or down to nothing: the message gives the file's size.
    for len in [20, 4, 0] {
        std::fs::write(&path, &bytes[..len]).unwrap();
        let err = load_error(&dir, &path, &[&format!("only {len} bytes")]);
        assert!(
            matches!(err, ModelError::Safetensors { .. }),
            "{len}: {err:?}"
        );
    }
}

#[test]
fn file_longer_than_its_header_says() {
    let root = tempfile::tempdir().unwrap();
    let dir = save(root.path(), "m", &model(Layout::Samba), SaveDtype::F32);
    let path = dir.join(WEIGHTS_FILE);
    let mut bytes = std::fs::read(&path).unwrap();
    let data_len = bytes.len() - 8 - u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    bytes.extend_from_slice(&[0; 16]);
    std::fs::write(&path, &bytes).unwrap();
    let err = load_error(
        &dir,
        &path,
        &[&data_len.to_string(), &(data_len + 16).to_string()],
    );
    assert!(matches!(err, ModelError::Safetensors { .. }), "{err:?}");
}

#[test]
fn corrupted_header() {
    let root = tempfile::tempdir().unwrap();
    let dir = save(root.path(), "m", &model(Layout::Samba), SaveDtype::F32);
    let path = dir.join(WEIGHTS_FILE);
    let original = std::fs::read(&path).unwrap();

    // Garbage over the JSON structure.
    let mut bytes = original.clone();
    bytes[8..20].copy_from_slice(b"#!garbage#!#");
    std::fs::write(&path, &bytes).unwrap();
    let err = load_error(&dir, &path, &["header"]);
    assert!(matches!(err, ModelError::Safetensors { .. }), "{err:?}");

    // Invalid UTF-8 in the header.
    let mut bytes = original.clone();
    bytes[30] = 0xff;
    std::fs::write(&path, &bytes).unwrap();
    let err = load_error(&dir, &path, &["header"]);
    assert!(matches!(err, ModelError::Safetensors { .. }), "{err:?}");

    // A header length beyond the file.
    let mut bytes = original.clone();
    bytes[..8].copy_from_slice(&(original.len() as u64).to_le_bytes());
    std::fs::write(&path, &bytes).unwrap();
    let err = load_error(&dir, &path, &["header"]);
    assert!(matches!(err, ModelError::Safetensors { .. }), "{err:?}");
}

#[test]
fn config_with_more_blocks_than_the_file() {
    let root = tempfile::tempdir().unwrap();
    let mut m = model(Layout::Samba);
    m.config.n_layer = 2;
    m.layout = ParamLayout::new(&m.config);
    m.params = init_params(&m.layout, 1);
    let dir = save(root.path(), "m", &m, SaveDtype::F32);
    let mut config = m.config.clone();
    config.n_layer = 4;
    write_config(&dir, &config);
    let err = load_error(
        &dir,
        &dir.join(WEIGHTS_FILE),
        &["transformer.h.2.", "4 blocks", "samba"],
    );
    assert!(matches!(err, ModelError::MissingTensor { .. }), "{err:?}");
}

#[test]
fn config_with_fewer_blocks_than_the_file() {
    let root = tempfile::tempdir().unwrap();
    let m = model(Layout::Samba);
    let dir = save(root.path(), "m", &m, SaveDtype::F32);
    let mut config = m.config.clone();
    config.n_layer = 2;
    write_config(&dir, &config);
    let err = load_error(&dir, &dir.join(WEIGHTS_FILE), &["transformer.h.2."]);
    assert!(
        matches!(err, ModelError::UnexpectedTensor { .. }),
        "{err:?}"
    );
}

#[test]
fn config_with_another_d_model() {
    let root = tempfile::tempdir().unwrap();
    let m = model(Layout::Samba);
    let dir = save(root.path(), "m", &m, SaveDtype::F32);
    let mut config = m.config.clone();
    config.d_model = 48;
    config.validate().unwrap();
    write_config(&dir, &config);
    let err = load_error(
        &dir,
        &dir.join(WEIGHTS_FILE),
        &["transformer.wte.weight", "[64, 32]", "[64, 48]"],
    );
    assert!(matches!(err, ModelError::WrongShape { .. }), "{err:?}");
}

#[test]
fn config_with_another_layout() {
    let root = tempfile::tempdir().unwrap();
    let m = model(Layout::Samba);
    let dir = save(root.path(), "m", &m, SaveDtype::F32);
    let mut config = m.config.clone();
    config.layout = Layout::LlamaSwa;
    write_config(&dir, &config);
    // Block 0 of the file is Mamba; the config expects attention there.
    let err = load_error(&dir, &dir.join(WEIGHTS_FILE), &["transformer.h.0.attn."]);
    assert!(
        matches!(err, ModelError::UnexpectedTensor { .. }),
        "{err:?}"
    );
}

#[test]
fn config_untied_but_file_tied() {
    // An untied config reads lm_head.weight as its own parameter: a tied file loads as untied
    // with equal values. The reverse (tied config, untied file) must be caught as a mismatch.
    let root = tempfile::tempdir().unwrap();
    let m = model(Layout::Llama);
    let dir = save(root.path(), "m", &m, SaveDtype::F32);
    let mut config = m.config.clone();
    config.tied_embeddings = true;
    write_config(&dir, &config);
    let err = load_error(&dir, &dir.join(WEIGHTS_FILE), &["lm_head.weight"]);
    assert!(matches!(err, ModelError::TiedMismatch { .. }), "{err:?}");
}

#[test]
fn tied_lm_head_that_differs_from_wte() {
    let root = tempfile::tempdir().unwrap();
    let dir = save(root.path(), "m", &model(Layout::Samba), SaveDtype::F32);
    rewrite(&dir, |entries| {
        let head = entry(entries, "lm_head.weight");
        let mut values = f32_values(&head.bytes);
        values[77] += 1.0;
        head.bytes = f32_bytes(&values);
    });
    let err = load_error(
        &dir,
        &dir.join(WEIGHTS_FILE),
        &["lm_head.weight", "transformer.wte.weight", "77"],
    );
    assert!(
        matches!(err, ModelError::TiedMismatch { index: 77, .. }),
        "{err:?}"
    );
}

#[test]
fn tied_lm_head_with_a_wrong_shape() {
    let root = tempfile::tempdir().unwrap();
    let dir = save(root.path(), "m", &model(Layout::Samba), SaveDtype::F32);
    rewrite(&dir, |entries| {
        entry(entries, "lm_head.weight").shape = vec![32, 64]
    });
    let err = load_error(&dir, &dir.join(WEIGHTS_FILE), &["lm_head.weight"]);
    assert!(matches!(err, ModelError::WrongShape { .. }), "{err:?}");
}

#[test]
fn non_finite_values() {
    let name = "transformer.h.0.attn.dt_proj.bias";
    for (dtype, bad) in [
        (Dtype::F32, f32::NAN),
        (Dtype::F32, f32::NEG_INFINITY),
        (Dtype::BF16, f32::INFINITY),
        (Dtype::F16, f32::NAN),
    ] {
        let root = tempfile::tempdir().unwrap();
        let dir = save(root.path(), "m", &model(Layout::Samba), SaveDtype::F32);
        rewrite(&dir, |entries| {
            let e = entry(entries, name);
            let mut values = f32_values(&e.bytes);
            values[5] = bad;
            e.dtype = dtype;
            e.bytes = match dtype {
                Dtype::BF16 => values
                    .iter()
                    .flat_map(|v| bf16::from_f32(*v).to_le_bytes())
                    .collect(),
                Dtype::F16 => values
                    .iter()
                    .flat_map(|v| f16::from_f32(*v).to_le_bytes())
                    .collect(),
                _ => f32_bytes(&values),
            };
        });
        let err = load_error(&dir, &dir.join(WEIGHTS_FILE), &[name, "element 5"]);
        assert!(
            matches!(err, ModelError::NonFinite { index: 5, .. }),
            "{dtype:?} {bad}: {err:?}"
        );
    }
}

#[test]
fn save_refuses_values_beyond_the_storage_range() {
    // f16 holds at most 65504: 2^17 would be stored as +inf and the folder would not load back.
    let root = tempfile::tempdir().unwrap();
    let mut m = model(Layout::Samba);
    let id = m.layout.ln_f;
    m.layout.slice_mut(&mut m.params, id)[3] = 131072.0;
    let dir = root.path().join("m");
    let err = save_model(&dir, &m.config, &m.layout, &m.params, SaveDtype::F16, None).unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(err, ModelError::Overflow { index: 3, value, .. } if value == 131072.0),
        "{err:?}"
    );
    for part in ["transformer.ln_f.weight", "131072", "F16", WEIGHTS_FILE] {
        assert!(msg.contains(part), "{part}: {msg}");
    }
    assert!(
        listing(root.path()).is_empty(),
        "a failed save left files behind"
    );
    // bf16 and f32 hold it.
    for dtype in [SaveDtype::Bf16, SaveDtype::F32] {
        let dir = root.path().join(format!("{dtype:?}"));
        save_model(&dir, &m.config, &m.layout, &m.params, dtype, None).unwrap();
        let loaded = load_model(&dir).unwrap();
        assert_eq!(m.layout.slice(&loaded.params, id)[3], 131072.0);
    }
    // bf16 overflows only next to f32::MAX.
    m.layout.slice_mut(&mut m.params, id)[3] = f32::MAX;
    let err = save_model(
        &root.path().join("b"),
        &m.config,
        &m.layout,
        &m.params,
        SaveDtype::Bf16,
        None,
    )
    .unwrap_err();
    assert!(
        matches!(err, ModelError::Overflow { dtype: "BF16", .. }),
        "{err:?}"
    );
}

#[test]
fn save_refuses_non_finite_values() {
    let root = tempfile::tempdir().unwrap();
    for dtype in [SaveDtype::F32, SaveDtype::Bf16, SaveDtype::F16] {
        let mut m = model(Layout::Llama);
        let head = m.layout.lm_head.unwrap();
        m.layout.slice_mut(&mut m.params, head)[9] = f32::NAN;
        let dir = root.path().join("m");
        let err = save_model(&dir, &m.config, &m.layout, &m.params, dtype, None).unwrap_err();
        assert!(
            matches!(err, ModelError::NonFinite { index: 9, ref name, .. } if name == "lm_head.weight"),
            "{err:?}"
        );
        assert!(err.to_string().contains(WEIGHTS_FILE), "{err}");
        assert!(
            listing(root.path()).is_empty(),
            "a failed save left files behind"
        );
    }
}

#[test]
fn model_dir_that_is_a_file() {
    let root = tempfile::tempdir().unwrap();
    let path = root.path().join("model.safetensors");
    std::fs::write(&path, b"not a folder").unwrap();
    let err = load_error(&path, &path, &["not a model folder"]);
    assert!(matches!(err, ModelError::Io { .. }), "{err:?}");

    let missing = root.path().join("nowhere");
    let err = load_error(&missing, &missing, &["no such model folder"]);
    assert!(matches!(err, ModelError::Io { .. }), "{err:?}");
}

#[test]
fn missing_weights_file() {
    let root = tempfile::tempdir().unwrap();
    let dir = save(root.path(), "m", &model(Layout::Samba), SaveDtype::F32);
    let path = dir.join(WEIGHTS_FILE);
    std::fs::remove_file(&path).unwrap();
    let err = load_error(&dir, &path, &[]);
    assert!(matches!(err, ModelError::Io { .. }), "{err:?}");
}

#[test]
fn each_stored_tensor_lands_in_its_layout_slot() {
    // The file orders tensors its own way (by dtype and name); loading goes by name.
    let root = tempfile::tempdir().unwrap();
    let m = model(Layout::MambaSwaMlp);
    let dir = save(root.path(), "m", &m, SaveDtype::F32);
    let loaded = load_model(&dir).unwrap();
    assert_eq!(loaded.params, m.params);
    let by_name: HashMap<&str, &[f32]> = m
        .layout
        .tensors
        .iter()
        .map(|t| (t.name.as_str(), &loaded.params[t.range()]))
        .collect();
    let entries = read_entries(&dir.join(WEIGHTS_FILE));
    for e in entries.iter().filter(|e| e.name != "lm_head.weight") {
        assert_eq!(f32_values(&e.bytes), by_name[e.name.as_str()], "{}", e.name);
    }
}
