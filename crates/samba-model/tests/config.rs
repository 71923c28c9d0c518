//! Configuration, presets and the parameter layout: the shapes and names of shared/SPEC.md
//! section 2, and the errors a user sees for a bad config.

use std::collections::HashSet;

use samba_model::config::{residual_scale, Config, Layout};
use samba_model::error::ModelError;
use samba_model::layout::ParamLayout;
use samba_model::preset::{preset, preset_with_layout, PRESETS};

fn tiny(layout: Layout) -> Config {
    preset_with_layout("tiny", layout).unwrap()
}

/// name -> shape of every tensor of a layout.
fn shapes(layout: &ParamLayout) -> Vec<(String, Vec<usize>)> {
    layout
        .tensors
        .iter()
        .map(|t| (t.name.clone(), t.shape.clone()))
        .collect()
}

fn shape_of(layout: &ParamLayout, name: &str) -> Vec<usize> {
    let id = layout
        .find(name)
        .unwrap_or_else(|| panic!("tensor {name} missing from the layout"));
    layout.spec(id).shape.clone()
}

#[test]
fn every_preset_validates_with_every_layout() {
    for name in PRESETS {
        let config = preset(name).unwrap();
        assert_eq!(config.layout, Layout::Samba, "{name}");
        config.validate().unwrap_or_else(|e| panic!("{name}: {e}"));
        for layout in Layout::ALL {
            let config = preset_with_layout(name, layout).unwrap();
            config
                .validate()
                .unwrap_or_else(|e| panic!("{name} / {layout}: {e}"));
            assert_eq!(config.layout, layout);
            // The paper's Llama-2 baseline is untied; every other layout keeps Samba's tying.
            assert_eq!(
                config.tied_embeddings,
                layout != Layout::Llama,
                "{name} / {layout}"
            );
        }
    }
}

#[test]
fn reference_presets_have_the_reference_sizes() {
    // shared/SPEC.md section 1, "Sizes".
    let rows = [
        ("samba-421m", 12, 1536, 12, 12, 128, 4096, 3072, 96, 32000),
        ("samba-1.3b", 18, 2304, 18, 18, 128, 6144, 4608, 144, 32000),
        ("samba-1.7b", 24, 2048, 32, 4, 64, 8192, 4096, 128, 50304),
        ("samba-3.8b", 32, 2816, 11, 1, 256, 9984, 5632, 176, 32064),
    ];
    for (name, n_layer, d, heads, kv_heads, head_dim, hidden, e, r, vocab) in rows {
        let c = preset(name).unwrap();
        let found = (
            c.n_layer,
            c.d_model,
            c.heads,
            c.kv_heads,
            c.head_dim,
            c.mlp_hidden,
            c.d_inner(),
            c.dt_rank,
            c.vocab,
        );
        assert_eq!(
            found,
            (n_layer, d, heads, kv_heads, head_dim, hidden, e, r, vocab),
            "{name}"
        );
        assert_eq!(c.window, 2048, "{name}");
        assert_eq!((c.d_state, c.d_conv, c.expand), (16, 4, 2), "{name}");
        assert_eq!(c.rope_base, Some(10000.0), "{name}");
        assert_eq!(c.norm_eps, 1e-5, "{name}");
        assert!(c.tied_embeddings, "{name}");
    }
}

#[test]
fn reference_presets_have_the_reference_parameter_counts() {
    let count = |name| ParamLayout::new(&preset(name).unwrap()).numel;
    assert_eq!(count("samba-421m"), 421_793_280);
    assert_eq!(count("samba-1.3b"), 1_330_207_488);
}

#[test]
fn samba_421m_names_and_shapes_match_the_reference() {
    let layout = ParamLayout::new(&preset("samba-421m").unwrap());
    let expected: Vec<(&str, Vec<usize>)> = vec![
        ("transformer.wte.weight", vec![32000, 1536]),
        ("transformer.ln_f.weight", vec![1536]),
        // Block 0: Mamba.
        ("transformer.h.0.norm_1.weight", vec![1536]),
        ("transformer.h.0.attn.in_proj.weight", vec![6144, 1536]),
        ("transformer.h.0.attn.conv1d.weight", vec![3072, 1, 4]),
        ("transformer.h.0.attn.conv1d.bias", vec![3072]),
        ("transformer.h.0.attn.x_proj.weight", vec![128, 3072]),
        ("transformer.h.0.attn.dt_proj.weight", vec![3072, 96]),
        ("transformer.h.0.attn.dt_proj.bias", vec![3072]),
        ("transformer.h.0.attn.A_log", vec![3072, 16]),
        ("transformer.h.0.attn.D", vec![3072]),
        ("transformer.h.0.attn.out_proj.weight", vec![1536, 3072]),
        ("transformer.h.0.norm_2.weight", vec![1536]),
        ("transformer.h.0.mlp.swiglu.w1.weight", vec![4096, 1536]),
        ("transformer.h.0.mlp.swiglu.w2.weight", vec![4096, 1536]),
        ("transformer.h.0.mlp.swiglu.w3.weight", vec![1536, 4096]),
        // Block 1: sliding-window attention.
        ("transformer.h.1.norm_1.weight", vec![1536]),
        ("transformer.h.1.attn.attn.weight", vec![4608, 1536]),
        ("transformer.h.1.attn.proj.weight", vec![1536, 1536]),
        ("transformer.h.1.norm_2.weight", vec![1536]),
        ("transformer.h.1.mlp.swiglu.w1.weight", vec![4096, 1536]),
        ("transformer.h.1.mlp.swiglu.w2.weight", vec![4096, 1536]),
        ("transformer.h.1.mlp.swiglu.w3.weight", vec![1536, 4096]),
        // The last blocks follow the same alternation.
        ("transformer.h.10.attn.A_log", vec![3072, 16]),
        ("transformer.h.11.attn.attn.weight", vec![4608, 1536]),
    ];
    for (name, shape) in &expected {
        assert_eq!(&shape_of(&layout, name), shape, "{name}");
    }
    // Blocks 0 and 1 hold exactly the tensors above, nothing more.
    for i in 0..2 {
        let prefix = format!("transformer.h.{i}.");
        let found: HashSet<&str> = layout
            .tensors
            .iter()
            .map(|t| t.name.as_str())
            .filter(|n| n.starts_with(&prefix))
            .collect();
        let listed: HashSet<&str> = expected
            .iter()
            .map(|(n, _)| *n)
            .filter(|n| n.starts_with(&prefix))
            .collect();
        assert_eq!(found, listed, "block {i}");
    }
    // No attention in Mamba blocks, no Mamba in attention blocks.
    assert!(layout.find("transformer.h.0.attn.attn.weight").is_none());
    assert!(layout.find("transformer.h.1.attn.in_proj.weight").is_none());
    assert!(layout.find("transformer.h.12.norm_1.weight").is_none());
    // Tied: the output projection is wte, and lm_head is not a separate parameter.
    assert!(layout.lm_head.is_none());
    assert!(layout.find("lm_head.weight").is_none());
    assert_eq!(layout.output_embedding(), layout.wte);
    // 6 blocks of 14 tensors (2 norms, 9 Mamba, 3 MLP), 6 of 7 (2 norms, 2 SWA, 3 MLP), wte, ln_f.
    assert_eq!(layout.tensors.len(), 6 * 14 + 6 * 7 + 2);
    assert_eq!(layout.tensors[0].name, "transformer.wte.weight");
    assert_eq!(
        layout.tensors.last().unwrap().name,
        "transformer.ln_f.weight"
    );
}

#[test]
fn every_layout_is_contiguous_with_distinct_names() {
    for layout_kind in Layout::ALL {
        for tied in [true, false] {
            let mut config = tiny(layout_kind);
            config.tied_embeddings = tied;
            let layout = ParamLayout::new(&config);
            let names: HashSet<&str> = layout.tensors.iter().map(|t| t.name.as_str()).collect();
            assert_eq!(
                names.len(),
                layout.tensors.len(),
                "{layout_kind}: duplicate names"
            );
            let mut next = 0;
            for t in &layout.tensors {
                assert_eq!(t.offset, next, "{layout_kind}: {} not contiguous", t.name);
                assert!(t.numel() > 0, "{layout_kind}: {} is empty", t.name);
                assert_eq!(t.range(), t.offset..t.offset + t.numel());
                next += t.numel();
            }
            assert_eq!(
                next, layout.numel,
                "{layout_kind}: offsets do not cover numel"
            );
            assert_eq!(layout.blocks.len(), config.n_layer);
            for (i, block) in layout.blocks.iter().enumerate() {
                assert_eq!(block.len(), layout_kind.sublayers(i).len(), "{layout_kind}");
            }
            for (id, t) in layout.tensors.iter().enumerate() {
                assert_eq!(layout.find(&t.name).map(|x| x.0), Some(id));
            }
            assert_eq!(layout.lm_head.is_some(), !tied, "{layout_kind}");
            assert_eq!(layout.find("lm_head.weight").is_some(), !tied);
        }
    }
}

#[test]
fn slices_address_each_tensor() {
    let layout = ParamLayout::new(&tiny(Layout::Samba));
    let mut buffer: Vec<f32> = (0..layout.numel).map(|i| i as f32).collect();
    let ln_f = layout.ln_f;
    let spec = layout.spec(ln_f).clone();
    assert_eq!(layout.slice(&buffer, ln_f).len(), spec.numel());
    assert_eq!(layout.slice(&buffer, ln_f)[0], spec.offset as f32);
    layout.slice_mut(&mut buffer, ln_f).fill(-1.0);
    assert_eq!(buffer.iter().filter(|v| **v == -1.0).count(), spec.numel());
    assert_eq!(buffer[spec.offset - 1], (spec.offset - 1) as f32);
}

#[test]
fn mamba_swa_mlp_names() {
    let config = tiny(Layout::MambaSwaMlp);
    let layout = ParamLayout::new(&config);
    let (d, e, n, r) = (
        config.d_model,
        config.d_inner(),
        config.d_state,
        config.dt_rank,
    );
    for i in 0..config.n_layer {
        let p = format!("transformer.h.{i}");
        let expected = [
            (format!("{p}.norm_m.weight"), vec![d]),
            (format!("{p}.mb.in_proj.weight"), vec![2 * e, d]),
            (format!("{p}.mb.conv1d.weight"), vec![e, 1, 4]),
            (format!("{p}.mb.conv1d.bias"), vec![e]),
            (format!("{p}.mb.x_proj.weight"), vec![r + 2 * n, e]),
            (format!("{p}.mb.dt_proj.weight"), vec![e, r]),
            (format!("{p}.mb.dt_proj.bias"), vec![e]),
            (format!("{p}.mb.A_log"), vec![e, n]),
            (format!("{p}.mb.D"), vec![e]),
            (format!("{p}.mb.out_proj.weight"), vec![d, e]),
            (format!("{p}.norm_attn.weight"), vec![d]),
            (format!("{p}.attn.attn.weight"), vec![config.qkv_dim(), d]),
            (
                format!("{p}.attn.proj.weight"),
                vec![d, config.heads * config.head_dim],
            ),
            (format!("{p}.norm_2.weight"), vec![d]),
            (
                format!("{p}.mlp.swiglu.w1.weight"),
                vec![config.mlp_hidden, d],
            ),
            (
                format!("{p}.mlp.swiglu.w2.weight"),
                vec![config.mlp_hidden, d],
            ),
            (
                format!("{p}.mlp.swiglu.w3.weight"),
                vec![d, config.mlp_hidden],
            ),
        ];
        let block: Vec<(String, Vec<usize>)> = shapes(&layout)
            .into_iter()
            .filter(|(name, _)| name.starts_with(&format!("{p}.")))
            .collect();
        assert_eq!(block, expected.to_vec(), "block {i}");
    }
}

#[test]
fn pure_mamba_names() {
    let config = tiny(Layout::Mamba);
    let layout = ParamLayout::new(&config);
    let (d, e) = (config.d_model, config.d_inner());
    for i in 0..config.n_layer {
        let p = format!("transformer.h.{i}");
        assert_eq!(shape_of(&layout, &format!("{p}.norm.weight")), vec![d]);
        assert_eq!(
            shape_of(&layout, &format!("{p}.mixer.in_proj.weight")),
            vec![2 * e, d]
        );
        assert_eq!(
            shape_of(&layout, &format!("{p}.mixer.out_proj.weight")),
            vec![d, e]
        );
        assert_eq!(
            shape_of(&layout, &format!("{p}.mixer.A_log")),
            vec![e, config.d_state]
        );
    }
    // No MLP, no attention, no norm_1/norm_2.
    for t in &layout.tensors {
        for absent in ["mlp", "norm_1", "norm_2", ".attn."] {
            assert!(!t.name.contains(absent), "{}", t.name);
        }
    }
    // Per block: norm + 9 Mamba tensors.
    assert_eq!(layout.tensors.len(), config.n_layer * 10 + 2);
}

#[test]
fn mlp2_swa_mlp_names() {
    let config = tiny(Layout::Mlp2SwaMlp);
    let layout = ParamLayout::new(&config);
    let d = config.d_model;
    // Even blocks: a SwiGLU of hidden 2d where Samba has Mamba.
    assert_eq!(shape_of(&layout, "transformer.h.0.norm_1.weight"), vec![d]);
    assert_eq!(
        shape_of(&layout, "transformer.h.0.attn.swiglu.w1.weight"),
        vec![2 * d, d]
    );
    assert_eq!(
        shape_of(&layout, "transformer.h.0.attn.swiglu.w2.weight"),
        vec![2 * d, d]
    );
    assert_eq!(
        shape_of(&layout, "transformer.h.0.attn.swiglu.w3.weight"),
        vec![d, 2 * d]
    );
    assert_eq!(
        shape_of(&layout, "transformer.h.0.mlp.swiglu.w1.weight"),
        vec![config.mlp_hidden, d]
    );
    // Odd blocks: attention as in Samba.
    assert_eq!(
        shape_of(&layout, "transformer.h.1.attn.attn.weight"),
        vec![config.qkv_dim(), d]
    );
    assert!(layout.find("transformer.h.0.attn.in_proj.weight").is_none());
    assert!(layout.tensors.iter().all(|t| !t.name.contains("A_log")));
}

#[test]
fn llama_is_untied_with_lm_head() {
    let config = tiny(Layout::Llama);
    let layout = ParamLayout::new(&config);
    let head = layout.lm_head.expect("untied llama has an lm_head");
    assert_eq!(layout.spec(head).name, "lm_head.weight");
    assert_eq!(layout.spec(head).shape, vec![config.vocab, config.d_model]);
    assert_eq!(layout.output_embedding(), head);
    assert_eq!(layout.tensors.last().unwrap().name, "lm_head.weight");
    for i in 0..config.n_layer {
        assert!(layout
            .find(&format!("transformer.h.{i}.attn.attn.weight"))
            .is_some());
    }
    assert!(!config.has_mamba());
    assert!(config.has_full_attention());
    assert!(tiny(Layout::Samba).has_mamba());
    assert!(!tiny(Layout::LlamaSwa).has_full_attention());
}

#[test]
fn gqa_fused_projection_rows() {
    // samba-1.7b: 32 query heads, 4 kv heads of 64 -> (32 + 8) * 64 rows.
    let config = preset("samba-1.7b").unwrap();
    let layout = ParamLayout::new(&config);
    assert_eq!(
        shape_of(&layout, "transformer.h.1.attn.attn.weight"),
        vec![(32 + 2 * 4) * 64, 2048]
    );
    assert_eq!(
        shape_of(&layout, "transformer.h.1.attn.proj.weight"),
        vec![2048, 32 * 64]
    );
}

#[test]
fn residual_scale_counts_residual_sublayers() {
    let scale = |layout| residual_scale(&tiny(layout));
    let n = 4.0f32;
    assert_eq!(scale(Layout::Samba), 1.0 / (2.0 * n).sqrt());
    assert_eq!(scale(Layout::MambaSwaMlp), 1.0 / (3.0 * n).sqrt());
    assert_eq!(scale(Layout::Mamba), 1.0 / n.sqrt());
    assert_eq!(scale(Layout::Llama), 1.0 / (2.0 * n).sqrt());
    assert_eq!(scale(Layout::Mlp2SwaMlp), 1.0 / (2.0 * n).sqrt());
}

#[test]
fn config_json_round_trips() {
    for name in PRESETS {
        for layout in Layout::ALL {
            let config = preset_with_layout(name, layout).unwrap();
            let json = config.to_json();
            let back = Config::from_json(&json, "mem.json").unwrap();
            assert_eq!(back, config, "{name} / {layout}");
            // The layout is stored under the name the CLI uses.
            let value: serde_json::Value = serde_json::from_str(&json).unwrap();
            assert_eq!(value["layout"], layout.name(), "{layout}");
        }
    }
    // NoPE stores null and reads it back.
    let mut nope = preset("tiny").unwrap();
    nope.rope_base = None;
    let json = nope.to_json();
    let value: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert!(value["rope_base"].is_null());
    assert_eq!(Config::from_json(&json, "mem.json").unwrap(), nope);
}

#[test]
fn layout_names_round_trip() {
    for layout in Layout::ALL {
        assert_eq!(Layout::from_name(layout.name()).unwrap(), layout);
        assert_eq!(layout.to_string(), layout.name());
    }
}

fn tiny_json() -> serde_json::Map<String, serde_json::Value> {
    match serde_json::from_str(&preset("tiny").unwrap().to_json()).unwrap() {
        serde_json::Value::Object(map) => map,
        other => panic!("config is not an object: {other}"),
    }
}

#[test]
fn unknown_key_is_rejected_naming_key_and_file() {
    let mut map = tiny_json();
    map.insert("n_embd".into(), 32.into());
    let text = serde_json::to_string(&map).unwrap();
    let err = Config::from_json(&text, "/models/m/config.json").unwrap_err();
    assert!(matches!(err, ModelError::ConfigJson { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("n_embd"), "{msg}");
    assert!(msg.contains("/models/m/config.json"), "{msg}");
}

#[test]
fn every_missing_key_is_rejected_naming_the_key() {
    let keys: Vec<String> = tiny_json().keys().cloned().collect();
    assert_eq!(keys.len(), 16, "{keys:?}");
    for key in keys {
        let mut map = tiny_json();
        map.remove(&key);
        let text = serde_json::to_string(&map).unwrap();
        let err = match Config::from_json(&text, "cfg/config.json") {
            Ok(c) => panic!("config without '{key}' was accepted: {c:?}"),
            Err(e) => e,
        };
        assert!(
            matches!(err, ModelError::ConfigJson { .. }),
            "{key}: {err:?}"
        );
        let msg = err.to_string();
        assert!(msg.contains(&format!("`{key}`")), "{key}: {msg}");
        assert!(msg.contains("cfg/config.json"), "{key}: {msg}");
    }
}

#[test]
fn malformed_json_names_the_file() {
    for text in ["", "{", "[1, 2]", "{\"layout\": \"samba\",}"] {
        let err = Config::from_json(text, "x/config.json").unwrap_err();
        assert!(matches!(err, ModelError::ConfigJson { .. }), "{err:?}");
        assert!(err.to_string().contains("x/config.json"), "{err}");
    }
    // A wrong type names the value.
    let mut map = tiny_json();
    map.insert("n_layer".into(), "four".into());
    let err = Config::from_json(&serde_json::to_string(&map).unwrap(), "c.json").unwrap_err();
    assert!(err.to_string().contains("four"), "{err}");
    // An unknown layout name in the file names it.
    let mut map = tiny_json();
    map.insert("layout".into(), "transformer".into());
    let err = Config::from_json(&serde_json::to_string(&map).unwrap(), "c.json").unwrap_err();
    assert!(err.to_string().contains("transformer"), "{err}");
}

fn invalid_field(config: &Config) -> (&'static str, String) {
    match config.validate() {
        Err(ModelError::InvalidConfig { field, why }) => (field, why),
        other => panic!("expected InvalidConfig, got {other:?} for {config:?}"),
    }
}

#[test]
fn invalid_values_name_the_field() {
    let base = preset("tiny").unwrap();

    let mut c = base.clone();
    c.heads = 6; // kv_heads = 2 divides 6: valid
    c.validate().unwrap();
    c.kv_heads = 4;
    let (field, why) = invalid_field(&c);
    assert_eq!(field, "kv_heads");
    assert!(why.contains('6') && why.contains('4'), "{why}");
    assert!(c.validate().unwrap_err().to_string().contains("kv_heads"));

    type Setter = fn(&mut Config);
    let zeros: [(&str, Setter); 12] = [
        ("n_layer", |c| c.n_layer = 0),
        ("d_model", |c| c.d_model = 0),
        ("heads", |c| c.heads = 0),
        ("kv_heads", |c| c.kv_heads = 0),
        ("head_dim", |c| c.head_dim = 0),
        ("mlp_hidden", |c| c.mlp_hidden = 0),
        ("window", |c| c.window = 0),
        ("d_state", |c| c.d_state = 0),
        ("d_conv", |c| c.d_conv = 0),
        ("expand", |c| c.expand = 0),
        ("dt_rank", |c| c.dt_rank = 0),
        ("vocab", |c| c.vocab = 0),
    ];
    for (name, set) in zeros {
        let mut c = base.clone();
        set(&mut c);
        let (field, _) = invalid_field(&c);
        assert_eq!(field, name);
        assert!(c.validate().unwrap_err().to_string().contains(name));
    }

    let mut c = base.clone();
    c.head_dim = 7;
    let (field, why) = invalid_field(&c);
    assert_eq!(field, "head_dim");
    assert!(why.contains('7'), "{why}");
    // Without RoPE an odd head_dim is fine.
    c.rope_base = None;
    c.validate().unwrap();

    for eps in [-1e-5, 0.0, f32::NAN, f32::INFINITY] {
        let mut c = base.clone();
        c.norm_eps = eps;
        let (field, _) = invalid_field(&c);
        assert_eq!(field, "norm_eps", "{eps}");
    }

    for rope_base in [0.5, 1.0, -10000.0, f32::NAN, f32::INFINITY] {
        let mut c = base.clone();
        c.rope_base = Some(rope_base);
        let (field, _) = invalid_field(&c);
        assert_eq!(field, "rope_base", "{rope_base}");
    }

    let mut c = base.clone();
    c.vocab = u32::MAX as usize + 1;
    let (field, _) = invalid_field(&c);
    assert_eq!(field, "vocab");
}

#[test]
fn sizes_too_large_to_index_are_rejected_not_panicking() {
    let base = preset("tiny").unwrap();
    type Setter = fn(&mut Config);
    let huge: [Setter; 6] = [
        |c| c.d_model = 1 << 40,
        |c| c.n_layer = usize::MAX / 2,
        |c| c.expand = 1 << 62,
        |c| c.head_dim = 1 << 61,
        |c| c.mlp_hidden = 1 << 60,
        // Each factor fits, the embedding alone (2^32 x 2^30, twice with lm_head) does not.
        |c| {
            c.vocab = u32::MAX as usize;
            c.d_model = 1 << 30;
        },
    ];
    for set in huge {
        let mut c = base.clone();
        set(&mut c);
        let (field, why) = invalid_field(&c);
        assert_eq!(field, "d_model", "{why}");
        // Through from_json too: a file cannot make the layout overflow.
        let err = Config::from_json(&c.to_json(), "big/config.json").unwrap_err();
        assert!(err.to_string().contains("big/config.json"), "{err}");
    }
}

#[test]
fn invalid_values_in_a_file_name_the_file_and_field() {
    let mut map = tiny_json();
    map.insert("kv_heads".into(), 3.into());
    let err =
        Config::from_json(&serde_json::to_string(&map).unwrap(), "m/config.json").unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("m/config.json"), "{msg}");
    assert!(msg.contains("kv_heads"), "{msg}");

    let mut map = tiny_json();
    map.insert("norm_eps".into(), (-1.0).into());
    let msg = Config::from_json(&serde_json::to_string(&map).unwrap(), "m/config.json")
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("m/config.json") && msg.contains("norm_eps"),
        "{msg}"
    );
}

#[test]
fn unknown_layout_lists_the_valid_ones() {
    let err = Layout::from_name("transformer").unwrap_err();
    assert!(matches!(err, ModelError::UnknownLayout(ref n) if n == "transformer"));
    let msg = err.to_string();
    assert!(msg.contains("'transformer'"), "{msg}");
    for layout in Layout::ALL {
        assert!(msg.contains(layout.name()), "{msg} lacks {layout}");
    }
}

#[test]
fn unknown_preset_lists_the_valid_ones() {
    for call in [
        preset("samba-7b").map(|_| ()),
        preset_with_layout("samba-7b", Layout::Llama).map(|_| ()),
    ] {
        let err = call.unwrap_err();
        assert!(matches!(err, ModelError::UnknownPreset { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(msg.contains("samba-7b"), "{msg}");
        for name in PRESETS {
            assert!(msg.contains(name), "{msg} lacks {name}");
        }
    }
}
