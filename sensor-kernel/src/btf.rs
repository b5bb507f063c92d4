//! A small reader of BTF (the kernel's type format): enough to find struct sizes and member offsets,
//! in the running kernel's `/sys/kernel/btf/vmlinux` (Rust eBPF gets no CO-RE, so the loader passes
//! offsets to the programs) and in the `.BTF` section of our own object (the layout check).

use std::collections::HashMap;

/// Errors reading BTF.
#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    #[error("BTF data is truncated or malformed: {0}")]
    Malformed(&'static str),
    #[error("BTF magic is {0:#x}, expected 0xeb9f (big-endian BTF is not supported)")]
    BadMagic(u16),
    #[error("BTF type kind {0} is unknown")]
    UnknownKind(u32),
}

const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_TYPE_TAG: u32 = 18;

/// A struct or union member.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    pub name: String,
    /// Type id of the member.
    pub type_id: u32,
    /// Offset in bits from the start of the containing struct.
    pub bit_offset: u32,
}

#[derive(Clone, Debug)]
struct Type {
    name_off: u32,
    kind: u32,
    /// `size` for structs/unions/ints, `type` for pointers/typedefs/modifiers.
    size_or_type: u32,
    members: Vec<(u32, u32, u32)>,
    kind_flag: bool,
}

/// Parsed BTF: types by id (id 0 is `void`).
pub struct Btf {
    types: Vec<Type>,
    strings: Vec<u8>,
    by_name: HashMap<String, Vec<u32>>,
}

fn u32_at(b: &[u8], at: usize) -> Result<u32, BtfError> {
    let s = b
        .get(at..at + 4)
        .ok_or(BtfError::Malformed("a read past the end"))?;
    Ok(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

impl Btf {
    /// The running kernel's BTF.
    pub fn from_sys_fs() -> std::io::Result<Btf> {
        let data = std::fs::read("/sys/kernel/btf/vmlinux")?;
        Btf::parse(&data).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
    }

    pub fn parse(data: &[u8]) -> Result<Btf, BtfError> {
        let magic = u16::from_le_bytes([*data.first().unwrap_or(&0), *data.get(1).unwrap_or(&0)]);
        if magic != 0xeb9f {
            return Err(BtfError::BadMagic(magic));
        }
        let hdr_len = u32_at(data, 4)? as usize;
        let type_off = u32_at(data, 8)? as usize;
        let type_len = u32_at(data, 12)? as usize;
        let str_off = u32_at(data, 16)? as usize;
        let str_len = u32_at(data, 20)? as usize;
        let tstart = hdr_len + type_off;
        let tdata = data
            .get(tstart..tstart + type_len)
            .ok_or(BtfError::Malformed("type section"))?;
        let sstart = hdr_len + str_off;
        let strings = data
            .get(sstart..sstart + str_len)
            .ok_or(BtfError::Malformed("string section"))?
            .to_vec();
        let mut types = vec![Type {
            name_off: 0,
            kind: 0,
            size_or_type: 0,
            members: Vec::new(),
            kind_flag: false,
        }];
        let mut at = 0usize;
        while at < tdata.len() {
            let name_off = u32_at(tdata, at)?;
            let info = u32_at(tdata, at + 4)?;
            let size_or_type = u32_at(tdata, at + 8)?;
            at += 12;
            let vlen = (info & 0xffff) as usize;
            let kind = (info >> 24) & 0x1f;
            let kind_flag = info >> 31 == 1;
            let mut members = Vec::new();
            let extra = match kind {
                1 | 14 | 17 => 4, // INT, VAR, DECL_TAG
                2 | 7 | 8 | 9 | 10 | 11 | 12 | 16 | 18 => 0,
                3 => 12, // ARRAY
                4 | 5 => {
                    for i in 0..vlen {
                        let m = at + i * 12;
                        members.push((
                            u32_at(tdata, m)?,
                            u32_at(tdata, m + 4)?,
                            u32_at(tdata, m + 8)?,
                        ));
                    }
                    vlen * 12
                }
                6 | 13 => vlen * 8,   // ENUM, FUNC_PROTO
                15 | 19 => vlen * 12, // DATASEC, ENUM64
                k => return Err(BtfError::UnknownKind(k)),
            };
            at += extra;
            types.push(Type {
                name_off,
                kind,
                size_or_type,
                members,
                kind_flag,
            });
        }
        let mut btf = Btf {
            types,
            strings,
            by_name: HashMap::new(),
        };
        for id in 1..btf.types.len() {
            let t = &btf.types[id];
            if t.kind == KIND_STRUCT || t.kind == KIND_UNION {
                let name = btf.str_at(t.name_off);
                if !name.is_empty() {
                    btf.by_name
                        .entry(name.to_string())
                        .or_default()
                        .push(u32::try_from(id).unwrap_or(0));
                }
            }
        }
        Ok(btf)
    }

    fn str_at(&self, off: u32) -> &str {
        let s = self.strings.get(off as usize..).unwrap_or(&[]);
        let end = s.iter().position(|&c| c == 0).unwrap_or(s.len());
        std::str::from_utf8(&s[..end]).unwrap_or("")
    }

    /// Follows typedefs and modifiers.
    fn resolve(&self, mut id: u32) -> u32 {
        for _ in 0..32 {
            match self.types.get(id as usize) {
                Some(t)
                    if matches!(
                        t.kind,
                        KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG
                    ) =>
                {
                    id = t.size_or_type;
                }
                _ => break,
            }
        }
        id
    }

    /// The struct (or union) named `name`: its id. When several share the name, the first with members.
    pub fn struct_id(&self, name: &str) -> Option<u32> {
        let ids = self.by_name.get(name)?;
        ids.iter()
            .copied()
            .find(|&id| !self.types[id as usize].members.is_empty())
            .or(ids.first().copied())
    }

    /// Names of all named structs and unions.
    pub fn names(&self) -> Vec<&str> {
        self.by_name.keys().map(String::as_str).collect()
    }

    /// Size in bytes of the struct `name`.
    pub fn struct_size(&self, name: &str) -> Option<u32> {
        self.struct_id(name)
            .map(|id| self.types[id as usize].size_or_type)
    }

    /// Direct members of a struct, with anonymous struct/union members flattened in.
    pub fn members(&self, name: &str) -> Option<Vec<Member>> {
        let id = self.struct_id(name)?;
        let mut out = Vec::new();
        self.collect(id, 0, &mut out);
        Some(out)
    }

    fn collect(&self, id: u32, base_bits: u32, out: &mut Vec<Member>) {
        let Some(t) = self.types.get(id as usize) else {
            return;
        };
        for &(name_off, type_id, offset) in &t.members {
            let bits = if t.kind_flag {
                offset & 0x00ff_ffff
            } else {
                offset
            };
            let name = self.str_at(name_off);
            let r = self.resolve(type_id);
            let rt = &self.types[r as usize];
            if name.is_empty() && (rt.kind == KIND_STRUCT || rt.kind == KIND_UNION) {
                self.collect(r, base_bits + bits, out);
            } else {
                out.push(Member {
                    name: name.to_string(),
                    type_id,
                    bit_offset: base_bits + bits,
                });
            }
        }
    }

    /// Byte offset of `member` in struct `name` (looking through anonymous structs and unions).
    pub fn offset_of(&self, name: &str, member: &str) -> Option<u32> {
        let m = self.members(name)?.into_iter().find(|m| m.name == member)?;
        (m.bit_offset % 8 == 0).then_some(m.bit_offset / 8)
    }
}

/// Extracts the `.BTF` section of an ELF object.
pub fn object_btf(elf: &[u8]) -> Option<Vec<u8>> {
    use object::{Object, ObjectSection};
    let file = object::File::parse(elf).ok()?;
    let sec = file.section_by_name(".BTF")?;
    sec.data().ok().map(<[u8]>::to_vec)
}
