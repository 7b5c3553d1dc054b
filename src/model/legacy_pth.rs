//! PyTorch's legacy checkpoint format (`torch.save` before 1.6, or with
//! `_use_new_zipfile_serialization=False`), in which ASEN's and AG-MAN's models were
//! published. The file is five pickles and then the raw storages:
//!
//! 1. the magic number `0x1950a86a20f9469cfc6c` (a LONG1 of 10 bytes);
//! 2. the protocol version, 1001;
//! 3. `sys_info`: `{"protocol_version", "little_endian", "type_sizes"}`;
//! 4. the saved object; each storage appears as a persistent id
//!    `("storage", <torch.XStorage>, key, location, numel, view_metadata)`, and a tensor as
//!    `torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)`;
//! 5. the storage keys, in the order their data follows;
//! 6. per key: the element count (8 bytes) and the elements, in the byte order
//!    `sys_info` states.
//!
//! Tensors may share a storage (at different offsets) and be non-contiguous: each is
//! gathered element by element from its storage through its offset and strides, with every
//! index checked against the storage's length.

use std::collections::HashMap;
use std::path::Path;

use candle_core::pickle::{Object, Stack};
use candle_core::{DType, Device, Tensor};

use crate::error::{Error, Result};

/// Opening bytes of a legacy checkpoint: PROTO 2, LONG1 of 10 bytes, the magic number.
const MAGIC: [u8; 14] = [
    0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19,
];
const PROTOCOL_VERSION: i64 = 1001;

/// True when the bytes start like a legacy `torch.save` file.
pub fn is_legacy(bytes: &[u8]) -> bool {
    bytes.starts_with(&MAGIC)
}

struct Storage {
    dtype: DType,
    /// Raw elements, already in little-endian order.
    bytes: Vec<u8>,
}

/// Reads every tensor of a legacy checkpoint: the `state_dict` entry's when the saved
/// object is a dict holding one, else the saved dict's own tensor entries.
pub fn read(path: &Path, bytes: &[u8], device: &Device) -> Result<HashMap<String, Tensor>> {
    let bad = |reason: String| Error::invalid(path, format!("legacy PyTorch checkpoint: {reason}"));
    if !is_legacy(bytes) {
        return Err(bad("no magic number".into()));
    }
    // The magic number's pickle ends with STOP.
    let mut rest = bytes
        .get(MAGIC.len() + 1..)
        .filter(|_| bytes.get(MAGIC.len()) == Some(&b'.'))
        .ok_or_else(|| bad("the magic number's pickle is malformed".into()))?;
    let version = unpickle(&mut rest).map_err(|e| bad(format!("protocol version: {e}")))?;
    match version {
        Object::Int(v) if v as i64 == PROTOCOL_VERSION => {}
        Object::Long(v) if v == PROTOCOL_VERSION => {}
        other => {
            return Err(bad(format!(
                "protocol version {} (expected {PROTOCOL_VERSION})",
                describe(&other)
            )))
        }
    }
    let sys_info = unpickle(&mut rest).map_err(|e| bad(format!("sys_info: {e}")))?;
    let little_endian = match dict_get(&sys_info, "little_endian") {
        Some(Object::Bool(b)) => *b,
        _ => true,
    };
    let root = unpickle(&mut rest).map_err(|e| bad(format!("saved object: {e}")))?;
    let keys = match unpickle(&mut rest).map_err(|e| bad(format!("storage keys: {e}")))? {
        Object::List(v) | Object::Tuple(v) => v
            .into_iter()
            .map(|k| match k {
                Object::Unicode(s) => Ok(s),
                other => Err(bad(format!(
                    "storage key {} is not a string",
                    describe(&other)
                ))),
            })
            .collect::<Result<Vec<_>>>()?,
        other => {
            return Err(bad(format!(
                "storage keys: expected a list, found {}",
                describe(&other)
            )))
        }
    };

    // Every tensor of the saved object tells its storage's element type (needed to step
    // over storages the state dict does not use, an optimiser's say).
    let mut dtypes: HashMap<String, DType> = HashMap::new();
    collect_dtypes(&root, &mut dtypes, 0);
    // Entries whose value is a tensor, from the state_dict when there is one.
    let entries = match dict_get(&root, "state_dict") {
        Some(Object::Dict(d)) => d.clone(),
        _ => match root {
            Object::Dict(d) => d,
            other => {
                return Err(bad(format!(
                    "the saved object is {}, not a dict of tensors",
                    describe(&other)
                )))
            }
        },
    };
    let mut specs = Vec::new();
    for (name, value) in entries {
        let Object::Unicode(name) = name else {
            continue;
        };
        let Some(spec) = tensor_spec(value).map_err(|e| bad(format!("tensor {name:?}: {e}")))?
        else {
            continue;
        };
        if let Some(prev) = dtypes.insert(spec.key.clone(), spec.dtype) {
            if prev != spec.dtype {
                return Err(bad(format!(
                    "storage {} is read as two element types",
                    spec.key
                )));
            }
        }
        specs.push((name, spec));
    }

    // The storages, in the listed order; each key's element type comes from the tensors.
    let mut storages: HashMap<String, Storage> = HashMap::new();
    for key in keys {
        let numel_bytes = take(&mut rest, 8)
            .ok_or_else(|| bad(format!("storage {key}: the file ends before its length")))?;
        let arr: [u8; 8] = numel_bytes.try_into().expect("8 bytes");
        let numel = if little_endian {
            u64::from_le_bytes(arr)
        } else {
            u64::from_be_bytes(arr)
        };
        let Some(&dtype) = dtypes.get(&key) else {
            // A storage no tensor of the state dict uses (an optimiser's, say): its element
            // size is unknown here, so nothing after it can be located.
            return Err(bad(format!(
                "storage {key} belongs to no tensor of the state dict; its size is unknown"
            )));
        };
        let size = dtype.size_in_bytes();
        let len = (numel as usize)
            .checked_mul(size)
            .filter(|&n| n <= rest.len())
            .ok_or_else(|| {
                bad(format!(
                    "storage {key}: {numel} elements run past the end of the file"
                ))
            })?;
        let mut data = take(&mut rest, len).expect("checked").to_vec();
        if !little_endian && size > 1 {
            for el in data.chunks_exact_mut(size) {
                el.reverse();
            }
        }
        storages.insert(key, Storage { dtype, bytes: data });
    }

    let mut tensors = HashMap::new();
    for (name, spec) in specs {
        let storage = storages.get(&spec.key).ok_or_else(|| {
            bad(format!(
                "tensor {name:?}: its storage {} is not in the file",
                spec.key
            ))
        })?;
        let t = gather(storage, &spec, device).map_err(|e| bad(format!("tensor {name:?}: {e}")))?;
        tensors.insert(name, t);
    }
    Ok(tensors)
}

/// Records the element type of every storage a tensor in `obj` uses (depth-limited: a
/// pickle can nest deeply only by malice).
fn collect_dtypes(obj: &Object, out: &mut HashMap<String, DType>, depth: usize) {
    if depth > 64 {
        return;
    }
    if let Ok(Some(spec)) = tensor_spec(obj.clone()) {
        out.entry(spec.key).or_insert(spec.dtype);
        return;
    }
    match obj {
        Object::Dict(d) => {
            for (k, v) in d {
                collect_dtypes(k, out, depth + 1);
                collect_dtypes(v, out, depth + 1);
            }
        }
        Object::List(v) | Object::Tuple(v) => {
            for x in v {
                collect_dtypes(x, out, depth + 1);
            }
        }
        Object::Reduce { callable, args } | Object::Build { callable, args } => {
            collect_dtypes(callable, out, depth + 1);
            collect_dtypes(args, out, depth + 1);
        }
        _ => {}
    }
}

/// Where a tensor's elements live.
struct TensorSpec {
    key: String,
    dtype: DType,
    /// Offset (elements) into the root storage: the view's plus the tensor's.
    offset: usize,
    size: Vec<usize>,
    stride: Vec<usize>,
}

fn tensor_spec(value: Object) -> std::result::Result<Option<TensorSpec>, String> {
    let Object::Reduce { callable, args } = value else {
        return Ok(None);
    };
    let (callable, args) = match (*callable, *args) {
        (
            Object::Class {
                module_name,
                class_name,
            },
            Object::Tuple(mut a),
        ) if module_name == "torch._utils" && class_name == "_rebuild_parameter" => {
            if a.is_empty() {
                return Err("empty parameter".into());
            }
            match a.remove(0) {
                Object::Reduce { callable, args } => (*callable, *args),
                _ => return Ok(None),
            }
        }
        (c, a) => (c, a),
    };
    match &callable {
        Object::Class {
            module_name,
            class_name,
        } if module_name == "torch._utils"
            && (class_name == "_rebuild_tensor_v2" || class_name == "_rebuild_tensor") => {}
        _ => return Ok(None),
    }
    let Object::Tuple(args) = args else {
        return Err("rebuild arguments are not a tuple".into());
    };
    if args.len() < 4 {
        return Err(format!(
            "{} rebuild arguments (expected at least 4)",
            args.len()
        ));
    }
    let mut args = args.into_iter();
    let storage = args.next().expect("checked");
    let offset = int(args.next().expect("checked"))?;
    let size = ints(args.next().expect("checked"))?;
    let stride = ints(args.next().expect("checked"))?;
    if size.len() != stride.len() {
        return Err(format!("{} sizes but {} strides", size.len(), stride.len()));
    }
    let Object::PersistentLoad(id) = storage else {
        return Err("the storage is not a persistent id".into());
    };
    let Object::Tuple(id) = *id else {
        return Err("the storage id is not a tuple".into());
    };
    if id.len() < 5 {
        return Err(format!(
            "storage id of {} fields (expected 5 or 6)",
            id.len()
        ));
    }
    let mut id = id.into_iter();
    let _tag = id.next();
    let dtype = match id.next().expect("checked") {
        Object::Class { class_name, .. } => storage_dtype(&class_name)?,
        other => return Err(format!("storage type {}", describe(&other))),
    };
    let key = match id.next().expect("checked") {
        Object::Unicode(s) => s,
        other => return Err(format!("storage key {}", describe(&other))),
    };
    let _location = id.next();
    let _numel = id.next();
    // view_metadata: (view_key, offset, size) when the tensor's storage is a view of `key`.
    let view_offset = match id.next() {
        None | Some(Object::None) => 0,
        Some(Object::Tuple(v)) if v.len() == 3 => int(v[1].clone())?,
        Some(other) => return Err(format!("storage view {}", describe(&other))),
    };
    Ok(Some(TensorSpec {
        key,
        dtype,
        offset: view_offset + offset,
        size,
        stride,
    }))
}

fn storage_dtype(class: &str) -> std::result::Result<DType, String> {
    Ok(match class {
        "FloatStorage" => DType::F32,
        "DoubleStorage" => DType::F64,
        "HalfStorage" => DType::F16,
        "BFloat16Storage" => DType::BF16,
        "ByteStorage" => DType::U8,
        "LongStorage" => DType::I64,
        "IntStorage" => DType::U32,
        other => return Err(format!("unsupported storage type {other}")),
    })
}

/// Copies a tensor's elements out of its storage into a contiguous tensor.
fn gather(
    storage: &Storage,
    spec: &TensorSpec,
    device: &Device,
) -> std::result::Result<Tensor, String> {
    let el = spec.dtype.size_in_bytes();
    let numel_storage = storage.bytes.len() / el;
    let count = spec
        .size
        .iter()
        .try_fold(1usize, |acc, &n| acc.checked_mul(n))
        .ok_or_else(|| format!("sizes {:?} overflow", spec.size))?;
    // Zero strides (an expanded tensor) may repeat elements, but not without bound: the
    // output is allocated before it is filled.
    if count > numel_storage.saturating_mul(64).max(1024) {
        return Err(format!(
            "sizes {:?} ask for {count} elements from a storage of {numel_storage}",
            spec.size
        ));
    }
    let mut out = Vec::with_capacity(count * el);
    if count > 0 {
        // The largest index reached must lie inside the storage.
        let last = spec
            .size
            .iter()
            .zip(&spec.stride)
            .try_fold(spec.offset, |acc, (&n, &st)| {
                (n - 1).checked_mul(st).and_then(|x| acc.checked_add(x))
            })
            .ok_or_else(|| format!("strides {:?} overflow", spec.stride))?;
        if last >= numel_storage {
            return Err(format!(
                "offset {} with sizes {:?} and strides {:?} reaches element {last} of a storage of {numel_storage}",
                spec.offset, spec.size, spec.stride
            ));
        }
        let mut idx = vec![0usize; spec.size.len()];
        for _ in 0..count {
            let src: usize = spec.offset
                + idx
                    .iter()
                    .zip(&spec.stride)
                    .map(|(i, s)| i * s)
                    .sum::<usize>();
            out.extend_from_slice(&storage.bytes[src * el..(src + 1) * el]);
            for d in (0..idx.len()).rev() {
                idx[d] += 1;
                if idx[d] < spec.size[d] {
                    break;
                }
                idx[d] = 0;
            }
        }
    }
    debug_assert_eq!(storage.dtype, spec.dtype);
    // Tensor::from_raw_buffer wants a shape; a 0-d tensor has an empty one.
    Tensor::from_raw_buffer(&out, spec.dtype, &spec.size, device).map_err(|e| e.to_string())
}

fn unpickle(rest: &mut &[u8]) -> std::result::Result<Object, String> {
    // candle's pickle machine is written for well-formed files; a hostile one must give an
    // error, not abort the process (its arithmetic can overflow on absurd opcodes).
    let mut cursor = *rest;
    let parsed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut stack = Stack::empty();
        stack.read_loop(&mut cursor)?;
        stack.finalize()
    }));
    *rest = cursor;
    match parsed {
        Ok(Ok(obj)) => Ok(obj),
        Ok(Err(e)) => {
            let msg = e.to_string();
            Err(if msg.contains("fill whole buffer") {
                "the file ends early".to_string()
            } else {
                format!("malformed pickle: {msg}")
            })
        }
        Err(_) => Err("malformed pickle".to_string()),
    }
}

fn take<'a>(rest: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    if rest.len() < n {
        return None;
    }
    let (head, tail) = rest.split_at(n);
    *rest = tail;
    Some(head)
}

fn dict_get<'a>(obj: &'a Object, key: &str) -> Option<&'a Object> {
    match obj {
        Object::Dict(d) => d
            .iter()
            .find(|(k, _)| matches!(k, Object::Unicode(s) if s == key))
            .map(|(_, v)| v),
        _ => None,
    }
}

fn int(o: Object) -> std::result::Result<usize, String> {
    match o {
        Object::Int(v) if v >= 0 => Ok(v as usize),
        Object::Long(v) if v >= 0 => Ok(v as usize),
        other => Err(format!("expected a count, found {}", describe(&other))),
    }
}

fn ints(o: Object) -> std::result::Result<Vec<usize>, String> {
    match o {
        Object::Tuple(v) | Object::List(v) => v.into_iter().map(int).collect(),
        other => Err(format!(
            "expected a tuple of counts, found {}",
            describe(&other)
        )),
    }
}

/// A short description of a pickled object for messages (not Rust's debug dump).
fn describe(o: &Object) -> String {
    match o {
        Object::Int(v) => v.to_string(),
        Object::Long(v) => v.to_string(),
        Object::Float(v) => v.to_string(),
        Object::Unicode(s) => format!("{s:?}"),
        Object::Bool(b) => b.to_string(),
        Object::None => "None".into(),
        Object::Tuple(_) => "a tuple".into(),
        Object::List(_) => "a list".into(),
        Object::Dict(_) => "a dict".into(),
        Object::Class {
            module_name,
            class_name,
        } => format!("{module_name}.{class_name}"),
        Object::Reduce { .. } | Object::Build { .. } => "an object".into(),
        Object::PersistentLoad(_) => "a persistent id".into(),
        Object::Mark => "a mark".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal pickle writer (protocol 2) for hand-made legacy files.
    struct P(Vec<u8>);
    impl P {
        fn new() -> Self {
            P(vec![0x80, 0x02])
        }
        fn op(mut self, b: &[u8]) -> Self {
            self.0.extend_from_slice(b);
            self
        }
        fn s(self, s: &str) -> Self {
            let mut b = vec![b'X'];
            b.extend_from_slice(&(s.len() as u32).to_le_bytes());
            b.extend_from_slice(s.as_bytes());
            self.op(&b)
        }
        fn i(self, v: u8) -> Self {
            self.op(&[b'K', v])
        }
        fn global(self, m: &str, c: &str) -> Self {
            self.op(format!("c{m}\n{c}\n").as_bytes())
        }
        fn done(self) -> Vec<u8> {
            self.op(b".").0
        }
    }

    /// A tensor entry: _rebuild_tensor_v2(storage "0", offset, size, stride, False, {}).
    fn tensor(p: P, name: &str, offset: u8, size: &[u8], stride: &[u8]) -> P {
        let mut p = p
            .s(name)
            .global("torch._utils", "_rebuild_tensor_v2")
            .op(b"(") // MARK for the args tuple
            .op(b"(") // MARK for the persistent id
            .s("storage")
            .global("torch", "FloatStorage")
            .s("0")
            .s("cpu")
            .i(6)
            .op(b"N") // no view
            .op(b"t") // TUPLE
            .op(b"Q") // BINPERSID
            .i(offset)
            .op(b"(");
        for &x in size {
            p = p.i(x);
        }
        p = p.op(b"t(");
        for &x in stride {
            p = p.i(x);
        }
        p.op(b"t").op(b"\x89}").op(b"t").op(b"R") // False, {}, TUPLE, REDUCE
    }

    fn file(little_endian: bool) -> Vec<u8> {
        let mut f = MAGIC.to_vec();
        f.push(b'.');
        f.extend(P::new().op(&[b'M', 0xe9, 0x03]).done());
        f.extend(
            P::new()
                .op(b"}(")
                .s("little_endian")
                .op(if little_endian { b"\x88" } else { b"\x89" })
                .op(b"u")
                .done(),
        );
        let root = P::new().op(b"}(");
        // "a": the 2x3 matrix [0..6); "t": its transpose (non-contiguous); "b": the last
        // two elements (shared storage at offset 4).
        let root = tensor(root, "a", 0, &[2, 3], &[3, 1]);
        let root = tensor(root, "t", 0, &[3, 2], &[1, 3]);
        let root = tensor(root, "b", 4, &[2], &[1]);
        f.extend(root.op(b"u").done());
        f.extend(P::new().op(b"]").s("0").op(b"a").done()); // ["0"]
        let vals = [0f32, 1., 2., 3., 4., 5.];
        if little_endian {
            f.extend(6u64.to_le_bytes());
            vals.iter().for_each(|v| f.extend(v.to_le_bytes()));
        } else {
            f.extend(6u64.to_be_bytes());
            vals.iter().for_each(|v| f.extend(v.to_be_bytes()));
        }
        f
    }

    fn values(t: &HashMap<String, Tensor>, name: &str) -> Vec<f32> {
        t[name].flatten_all().unwrap().to_vec1().unwrap()
    }

    #[test]
    fn shared_and_strided_tensors_in_either_byte_order() {
        for le in [true, false] {
            let t = read(Path::new("x.pth"), &file(le), &Device::Cpu).unwrap();
            assert_eq!(values(&t, "a"), [0., 1., 2., 3., 4., 5.], "le={le}");
            assert_eq!(t["t"].dims(), [3, 2]);
            assert_eq!(values(&t, "t"), [0., 3., 1., 4., 2., 5.], "le={le}");
            assert_eq!(values(&t, "b"), [4., 5.], "le={le}");
        }
    }

    /// Every prefix and every single-byte change of a valid file gives a tensor map or an
    /// error, never a panic or a read out of bounds.
    #[test]
    fn damaged_files_never_panic() {
        let good = file(true);
        for cut in 0..good.len() {
            assert!(read(Path::new("x.pth"), &good[..cut], &Device::Cpu).is_err());
        }
        for i in MAGIC.len()..good.len() {
            for x in [0x00, 0x7f, 0xff] {
                let mut f = good.clone();
                f[i] = x;
                let _ = read(Path::new("x.pth"), &f, &Device::Cpu);
            }
        }
    }

    #[test]
    fn out_of_range_views_and_short_files_are_errors() {
        let mut f = file(true);
        // "b" at offset 4 with size 2 is fine; cut the data so the storage is short.
        f.truncate(f.len() - 4);
        let err = read(Path::new("x.pth"), &f, &Device::Cpu)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("storage 0: 6 elements run past the end of the file"),
            "{err}"
        );
        let err = read(Path::new("x.pth"), b"\x80\x02junk", &Device::Cpu)
            .unwrap_err()
            .to_string();
        assert!(err.contains("no magic number"), "{err}");
    }
}
