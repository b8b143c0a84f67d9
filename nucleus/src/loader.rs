//! A boot module's ELF → a loaded image: a fresh address space with the segments, stack,
//! rings and start page mapped, and the nucleus' ends of the rings (servers now, guest
//! kernels next). Storing the image in a thread and announcing it is `lifecycle`'s job.
//!
//! `unsafe` here: copying into frames just allocated for the image (through the direct map)
//! and initialising the ring pages, which no one else can reach yet.
use crate::mm::{self, AddressSpace, MemoryError};
use bsp_x86_64::paging::PageTableFlags as F;
use bsp_x86_64::server_image::{self, ServerImage};
use core::fmt;
use ipc::layout::{self, StartInfo};
use ipc::ring::{Consumer, Producer};

pub use crate::image::{Image, StartParams};

/// Why a module was not loaded.
#[derive(Clone, Copy, Debug)]
pub enum LoadError {
    /// The thread has no boot module to load from.
    NoModule,
    Image(server_image::ImageError),
    Memory(MemoryError),
    Ring,
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoModule => f.write_str("no boot module"),
            Self::Image(e) => write!(f, "{e}"),
            Self::Memory(e) => write!(f, "{e}"),
            Self::Ring => f.write_str("ring setup failed"),
        }
    }
}

impl From<MemoryError> for LoadError {
    fn from(e: MemoryError) -> Self {
        Self::Memory(e)
    }
}

/// Validates the module at `module` and builds its address space.
pub fn load(module: &core::ops::Range<u64>, start: &StartParams<'_>) -> Result<Image, LoadError> {
    let bytes = mm::module_bytes(module);
    let image = server_image::validate(bytes).map_err(LoadError::Image)?;
    let mut space = AddressSpace::new()?;
    match populate(&mut space, bytes, &image, start) {
        Ok((events, replies)) => Ok(Image {
            space,
            entry: image.entry,
            events,
            replies,
            bytes: bytes.len(),
            segments: image.segments.len(),
        }),
        Err(e) => {
            space.destroy();
            Err(e)
        }
    }
}

fn populate(
    space: &mut AddressSpace,
    bytes: &[u8],
    image: &ServerImage,
    start: &StartParams<'_>,
) -> Result<(Producer<'static>, Consumer<'static>), LoadError> {
    for segment in image.segments.iter() {
        let mut flags = F::empty();
        if segment.flags.write {
            flags |= F::WRITABLE;
        }
        if !segment.flags.execute {
            flags |= F::NO_EXECUTE;
        }
        let first = segment.vaddr & !0xfff;
        let end = (segment.vaddr + segment.memsz + 0xfff) & !0xfff;
        let file =
            &bytes[segment.file_offset as usize..(segment.file_offset + segment.filesz) as usize];
        let mut page = first;
        while page < end {
            let frame = space.map_new(page, flags)?;
            // Bytes of the file image that fall into this page.
            let lo = page.max(segment.vaddr);
            let hi = (page + 4096).min(segment.vaddr + segment.filesz);
            if lo < hi {
                let src = &file[(lo - segment.vaddr) as usize..(hi - segment.vaddr) as usize];
                let dst = mm::phys_to_virt(frame.as_u64()) + (lo - page);
                // SAFETY: `dst..dst+len` lies inside the fresh frame (lo and hi are within
                // one page); the source is the validated module slice.
                unsafe { core::ptr::copy_nonoverlapping(src.as_ptr(), dst as *mut u8, src.len()) };
            }
            page += 4096;
        }
    }
    // Stack with an unmapped guard page below it.
    let mut page = layout::STACK_TOP - layout::STACK_BYTES;
    while page < layout::STACK_TOP {
        space.map_new(page, F::WRITABLE | F::NO_EXECUTE)?;
        page += 4096;
    }
    // Rings: zero-filled pages are empty rings; the nucleus attaches its ends.
    let event = space.map_new(layout::EVENT_RING, F::WRITABLE | F::NO_EXECUTE)?;
    let reply = space.map_new(layout::REPLY_RING, F::WRITABLE | F::NO_EXECUTE)?;
    let event_va = mm::phys_to_virt(event.as_u64()) as *mut u8;
    let reply_va = mm::phys_to_virt(reply.as_u64()) as *mut u8;
    let len = layout::RING_BYTES as usize;
    // SAFETY: both pages were just allocated for this image and mapped once in its space;
    // the nucleus holds the only producer of `event` and the only consumer of `reply`. The
    // server may scribble on them: the ring checks every index it reads.
    let rings = unsafe {
        ipc::ring::init(event_va, len).map_err(|_| LoadError::Ring)?;
        ipc::ring::init(reply_va, len).map_err(|_| LoadError::Ring)?;
        (
            Producer::attach(event_va, len).map_err(|_| LoadError::Ring)?,
            Consumer::attach(reply_va, len).map_err(|_| LoadError::Ring)?,
        )
    };
    // Start page, read-only for the server.
    let page = space.map_new(layout::START_INFO, F::NO_EXECUTE)?;
    let mut info = StartInfo {
        magic: layout::START_INFO_MAGIC,
        version: layout::START_INFO_VERSION,
        generation: start.generation,
        name: [0; 32],
        args: [0; 128],
        event_ring: layout::EVENT_RING,
        reply_ring: layout::REPLY_RING,
        ring_bytes: layout::RING_BYTES,
    };
    info.name[..start.name.len()].copy_from_slice(start.name.as_bytes());
    let n = start.args.len().min(info.args.len());
    info.args[..n].copy_from_slice(&start.args[..n]);
    // SAFETY: the start page is a fresh frame of this space; StartInfo fits in a page.
    unsafe { core::ptr::write(mm::phys_to_virt(page.as_u64()) as *mut StartInfo, info) };
    Ok(rings)
}
