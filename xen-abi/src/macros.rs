//! `abi_enum!`: a numbered ABI value as a Rust enum with a checked conversion from the raw
//! register or field value (an unknown number is `None`, never a panic).

macro_rules! abi_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident: $repr:ty {
            $( $(#[$vmeta:meta])* $variant:ident = $value:expr ),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[repr($repr)]
        pub enum $name {
            $( $(#[$vmeta])* $variant = $value ),+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [Self] = &[$(Self::$variant),+];

            /// The value for `raw` (a whole register: high bits must be clear), if it has one.
            pub const fn from_raw(raw: u64) -> Option<Self> {
                $( if raw == $value as u64 { return Some(Self::$variant); } )+
                None
            }

            /// The number the ABI uses.
            pub const fn raw(self) -> $repr {
                self as $repr
            }

            /// The variant's name as written here (for traces and logs).
            pub const fn label(self) -> &'static str {
                match self {
                    $( Self::$variant => stringify!($variant) ),+
                }
            }
        }
    };
}
