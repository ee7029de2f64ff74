//! `#[derive(Record)]` for `envseal-fields`: see `envseal_fields::record` for the attributes
//! and what is generated. Mistakes in the attributes are compile errors, so the index
//! definitions the generated code builds are valid by construction.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

use proc_macro::TokenStream;
use proc_macro2::{Span, TokenStream as TokenStream2};
use quote::{format_ident, quote};
use syn::spanned::Spanned;
use syn::{
    Data, DeriveInput, Fields, GenericArgument, Ident, LitInt, LitStr, Path, PathArguments, Type, parse_macro_input,
};

/// Derives `envseal_fields::Record`: a companion struct with the marked fields sealed, the
/// `Record` impl, and one query helper per blind index.
#[proc_macro_derive(Record, attributes(envseal))]
pub fn derive_record(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    match expand(&input) {
        Ok(t) => t.into(),
        Err(e) => e.to_compile_error().into(),
    }
}

const DEFAULT_BITS: u16 = 32;

struct FieldInfo {
    ident: Ident,
    vis: syn::Visibility,
    ty: Type,
    /// `T` when the type is `Option<T>`.
    option_of: Option<Type>,
    column: String,
    primary_key: bool,
    encrypt: bool,
    index: Option<(String, Span)>,
    normalize: String,
    bits: Option<u16>,
}

/// A struct-level `index(...)`: name, span, field names with their spans, bits.
type CompoundIndex = (String, Span, Vec<(String, Span)>, u16);

struct IndexInfo {
    name: String,
    span: Span,
    fields: Vec<usize>,
    bits: u16,
}

fn err<T>(span: Span, msg: impl std::fmt::Display) -> syn::Result<T> {
    Err(syn::Error::new(span, msg))
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_')
        && !s.as_bytes()[0].is_ascii_digit()
}

fn option_inner(ty: &Type) -> Option<Type> {
    let Type::Path(p) = ty else { return None };
    let seg = p.path.segments.last()?;
    if seg.ident != "Option" {
        return None;
    }
    let PathArguments::AngleBracketed(a) = &seg.arguments else { return None };
    match a.args.first()? {
        GenericArgument::Type(t) if a.args.len() == 1 => Some(t.clone()),
        _ => None,
    }
}

fn normalize_tokens(n: &str, span: Span) -> syn::Result<TokenStream2> {
    Ok(match n {
        "none" => quote!(::envseal_fields::Normalize::None),
        "lowercase" => quote!(::envseal_fields::Normalize::Lowercase),
        "digits" => quote!(::envseal_fields::Normalize::Digits),
        _ => return err(span, "normalize must be \"none\", \"lowercase\" or \"digits\""),
    })
}

fn parse_bits(lit: &LitInt) -> syn::Result<u16> {
    let b: u16 = lit.base10_parse()?;
    if !(1..=256).contains(&b) {
        return err(lit.span(), "bits must be 1 to 256");
    }
    Ok(b)
}

fn expand(input: &DeriveInput) -> syn::Result<TokenStream2> {
    let name = &input.ident;
    if !input.generics.params.is_empty() {
        return err(input.generics.span(), "#[derive(Record)] does not support generic structs");
    }
    let Data::Struct(data) = &input.data else {
        return err(input.span(), "#[derive(Record)] needs a struct with named fields");
    };
    let Fields::Named(named) = &data.fields else {
        return err(input.span(), "#[derive(Record)] needs a struct with named fields");
    };

    // Struct attributes.
    let mut table: Option<String> = None;
    let mut sealed_name = format_ident!("{}Sealed", name);
    let mut extra_derives: Vec<Path> = Vec::new();
    let mut with_serde = true;
    let mut compound: Vec<CompoundIndex> = Vec::new();
    for attr in input.attrs.iter().filter(|a| a.path().is_ident("envseal")) {
        attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("table") {
                let s: LitStr = meta.value()?.parse()?;
                let t = s.value();
                let ok = t.splitn(2, '.').all(valid_name);
                if !ok {
                    return err(s.span(), "table: 1-63 characters of [A-Za-z0-9_] (optionally schema.table)");
                }
                table = Some(t);
            } else if meta.path.is_ident("sealed") {
                let s: LitStr = meta.value()?.parse()?;
                sealed_name = Ident::new(&s.value(), s.span());
            } else if meta.path.is_ident("serde") {
                let b: syn::LitBool = meta.value()?.parse()?;
                with_serde = b.value;
            } else if meta.path.is_ident("derive") {
                meta.parse_nested_meta(|d| {
                    extra_derives.push(d.path.clone());
                    Ok(())
                })?;
            } else if meta.path.is_ident("index") {
                let (mut iname, mut fields, mut bits) = (None, Vec::new(), DEFAULT_BITS);
                let span = meta.path.span();
                meta.parse_nested_meta(|m| {
                    if m.path.is_ident("name") {
                        let s: LitStr = m.value()?.parse()?;
                        iname = Some(s.value());
                    } else if m.path.is_ident("fields") {
                        let content;
                        syn::parenthesized!(content in m.input);
                        let list = content
                            .parse_terminated(|p: syn::parse::ParseStream<'_>| p.parse::<LitStr>(), syn::Token![,])?;
                        fields = list.iter().map(|l| (l.value(), l.span())).collect();
                    } else if m.path.is_ident("bits") {
                        bits = parse_bits(&m.value()?.parse()?)?;
                    } else {
                        return Err(m.error("expected name, fields or bits"));
                    }
                    Ok(())
                })?;
                let Some(iname) = iname else { return err(span, "index(...) needs name = \"...\"") };
                if fields.is_empty() {
                    return err(span, "index(...) needs fields(\"a\", \"b\")");
                }
                compound.push((iname, span, fields, bits));
            } else {
                return Err(meta.error("expected table, sealed, serde, derive(...) or index(...)"));
            }
            Ok(())
        })?;
    }
    let Some(table) = table else {
        return err(input.span(), "#[derive(Record)] needs #[envseal(table = \"...\")]");
    };

    // Field attributes.
    let mut fields: Vec<FieldInfo> = Vec::new();
    for f in &named.named {
        // Invariant: named fields have identifiers.
        let ident = f.ident.clone().expect("named field");
        let mut info = FieldInfo {
            column: ident.to_string(),
            ident,
            vis: f.vis.clone(),
            ty: f.ty.clone(),
            option_of: option_inner(&f.ty),
            primary_key: false,
            encrypt: false,
            index: None,
            normalize: "none".into(),
            bits: None,
        };
        for attr in f.attrs.iter().filter(|a| a.path().is_ident("envseal")) {
            attr.parse_nested_meta(|meta| {
                if meta.path.is_ident("primary_key") {
                    info.primary_key = true;
                } else if meta.path.is_ident("encrypt") {
                    info.encrypt = true;
                } else if meta.path.is_ident("index") {
                    let s: LitStr = meta.value()?.parse()?;
                    info.index = Some((s.value(), s.span()));
                } else if meta.path.is_ident("normalize") {
                    let s: LitStr = meta.value()?.parse()?;
                    normalize_tokens(&s.value(), s.span())?;
                    info.normalize = s.value();
                } else if meta.path.is_ident("bits") {
                    info.bits = Some(parse_bits(&meta.value()?.parse()?)?);
                } else if meta.path.is_ident("column") {
                    let s: LitStr = meta.value()?.parse()?;
                    if !valid_name(&s.value()) {
                        return err(s.span(), "column: 1-63 characters of [A-Za-z0-9_]");
                    }
                    info.column = s.value();
                } else {
                    return Err(meta.error("expected primary_key, encrypt, index, normalize, bits or column"));
                }
                Ok(())
            })?;
        }
        if info.primary_key && info.encrypt {
            return err(info.ident.span(), "the primary key cannot be sealed: it is bound into every value's context");
        }
        if info.index.is_some() && !info.encrypt {
            return err(info.ident.span(), "index = ... needs encrypt (a plain column needs no blind index)");
        }
        if info.bits.is_some() && info.index.is_none() {
            return err(info.ident.span(), "bits = ... belongs to a field with index = ...");
        }
        fields.push(info);
    }
    let pks: Vec<&FieldInfo> = fields.iter().filter(|f| f.primary_key).collect();
    if pks.len() > 1 {
        return err(pks[1].ident.span(), "only one field can be the primary key");
    }

    // Indexes: one per `index = ...` field, then the compound ones.
    let mut indexes: Vec<IndexInfo> = Vec::new();
    for (i, f) in fields.iter().enumerate() {
        if let Some((n, span)) = &f.index {
            indexes.push(IndexInfo {
                name: n.clone(),
                span: *span,
                fields: vec![i],
                bits: f.bits.unwrap_or(DEFAULT_BITS),
            });
        }
    }
    for (n, span, fnames, bits) in compound {
        let mut idx = Vec::new();
        for (fname, fspan) in fnames {
            let Some(i) = fields.iter().position(|f| f.ident == fname) else {
                return err(fspan, format!("no field named {fname}"));
            };
            idx.push(i);
        }
        indexes.push(IndexInfo { name: n, span, fields: idx, bits });
    }
    for (k, ix) in indexes.iter().enumerate() {
        if !valid_name(&ix.name) {
            return err(ix.span, "index name: 1-63 characters of [A-Za-z0-9_]");
        }
        if indexes[..k].iter().any(|o| o.name == ix.name) || fields.iter().any(|f| f.ident == ix.name) {
            return err(ix.span, format!("index name {} is already a field or index name", ix.name));
        }
        for &i in &ix.fields {
            if !fields[i].encrypt || fields[i].option_of.is_some() {
                return err(
                    ix.span,
                    format!("index {}: field {} must be sealed and not an Option", ix.name, fields[i].ident),
                );
            }
        }
        if ix.fields.len() > 16 {
            return err(ix.span, "an index has at most 16 fields");
        }
    }

    let vis = &input.vis;
    let env = quote!(::envseal_fields);
    let private = quote!(::envseal_fields::record::__private);

    // The companion struct.
    let sealed_fields = fields.iter().map(|f| {
        let (id, v, ty) = (&f.ident, &f.vis, &f.ty);
        match (f.encrypt, &f.option_of) {
            (false, _) => {
                let doc = format!("`{name}::{id}`, as is.");
                quote!(#[doc = #doc] #v #id: #ty)
            }
            (true, None) => {
                let doc = format!("`{name}::{id}`, sealed.");
                quote!(#[doc = #doc] #v #id: #env::Sealed)
            }
            (true, Some(_)) => {
                let doc = format!("`{name}::{id}`, sealed (`None` stays `None`).");
                quote!(#[doc = #doc] #v #id: ::core::option::Option<#env::Sealed>)
            }
        }
    });
    let index_fields = indexes.iter().map(|ix| {
        let id = Ident::new(&ix.name, ix.span);
        let doc = format!("The term of the blind index `{}`.", ix.name);
        quote!(#[doc = #doc] #vis #id: #env::IndexTerm)
    });
    let serde_attrs = if with_serde {
        quote! {
            #[derive(#env::serde::Serialize, #env::serde::Deserialize)]
            #[serde(crate = "::envseal_fields::serde")]
        }
    } else {
        quote!()
    };
    let doc =
        format!("`{name}` with its sealed fields sealed and its blind-index terms (generated by `#[derive(Record)]`).");

    let pk_binding = |src: TokenStream2| match pks.first() {
        Some(pk) => {
            let id = &pk.ident;
            quote! {
                let __pk_text = #env::RowKey::row_key(&#src.#id);
                let __pk: ::core::option::Option<&str> = ::core::option::Option::Some(&*__pk_text);
            }
        }
        None => quote!(let __pk: ::core::option::Option<&str> = ::core::option::Option::None;),
    };
    let seal_pk = pk_binding(quote!(self));
    let open_pk = pk_binding(quote!(__sealed));

    let seal_stmts = fields.iter().filter(|f| f.encrypt).map(|f| {
        let (id, col) = (&f.ident, &f.column);
        let column = quote!(__cipher.column(<Self as #env::Record>::TABLE, #col)?);
        match f.option_of {
            None => quote!(let #id = #column.seal_value(&self.#id, __pk).await?;),
            Some(_) => quote! {
                let #id = match &self.#id {
                    ::core::option::Option::Some(v) => ::core::option::Option::Some(#column.seal_value(v, __pk).await?),
                    ::core::option::Option::None => ::core::option::Option::None,
                };
            },
        }
    });
    let index_fn = |ix: &IndexInfo| format_ident!("__envseal_index_{}", ix.name);
    let index_stmts = indexes.iter().map(|ix| {
        let id = Ident::new(&ix.name, ix.span);
        let f = index_fn(ix);
        let inputs = ix.fields.iter().map(|&i| {
            let fid = &fields[i].ident;
            quote!(&*#private::encode(&self.#fid))
        });
        quote! {
            let #id = __cipher.index(<Self as #env::Record>::TABLE, Self::#f())?.term(&[#(#inputs),*]).await?;
        }
    });
    let sealed_inits = fields.iter().map(|f| {
        let id = &f.ident;
        if f.encrypt { quote!(#id) } else { quote!(#id: ::core::clone::Clone::clone(&self.#id)) }
    });
    let index_inits = indexes.iter().map(|ix| Ident::new(&ix.name, ix.span));

    let open_inits = fields.iter().map(|f| {
        let (id, col) = (&f.ident, &f.column);
        if !f.encrypt {
            return quote!(#id: ::core::clone::Clone::clone(&__sealed.#id));
        }
        let column = quote!(__cipher.column(<Self as #env::Record>::TABLE, #col)?);
        match &f.option_of {
            None => {
                let ty = &f.ty;
                quote!(#id: #column.open_value::<#ty>(&__sealed.#id, __pk).await?)
            }
            Some(inner) => quote! {
                #id: match &__sealed.#id {
                    ::core::option::Option::Some(v) => ::core::option::Option::Some(#column.open_value::<#inner>(v, __pk).await?),
                    ::core::option::Option::None => ::core::option::Option::None,
                }
            },
        }
    });

    let index_defs = indexes.iter().map(|ix| {
        let f = index_fn(ix);
        let iname = &ix.name;
        let bits = ix.bits;
        let parts = ix.fields.iter().map(|&i| {
            let col = &fields[i].column;
            // Invariant: checked when the attribute was parsed.
            let n = normalize_tokens(&fields[i].normalize, Span::call_site()).expect("normalize checked");
            quote!((#col, #n))
        });
        quote! {
            #[doc(hidden)]
            fn #f() -> &'static #env::IndexDef {
                static DEF: ::std::sync::OnceLock<#env::IndexDef> = ::std::sync::OnceLock::new();
                DEF.get_or_init(|| {
                    // Invariant: names and bits were checked by #[derive(Record)].
                    #env::IndexDef::new(#iname, [#(#parts),*], #bits).expect("index definition checked by the derive")
                })
            }
        }
    });
    let query_fns = indexes.iter().map(|ix| {
        let qf = Ident::new(&ix.name, ix.span);
        let f = index_fn(ix);
        let params = ix.fields.iter().map(|&i| {
            let (id, ty) = (&fields[i].ident, &fields[i].ty);
            quote!(#id: &#ty)
        });
        let inputs = ix.fields.iter().map(|&i| {
            let id = &fields[i].ident;
            quote!(&*#private::encode(#id))
        });
        let extracts = ix.fields.iter().map(|&i| {
            let id = &fields[i].ident;
            quote!(#private::encode(&r.#id))
        });
        let doc = format!(
            "A query on the blind index `{}`: bind `.terms()` (`WHERE {} = ANY($1)`), open the rows, keep those for which `.matches(&record)` holds.",
            ix.name, ix.name
        );
        quote! {
            #[doc = #doc]
            #vis async fn #qf(__cipher: &#env::FieldCipher, #(#params),*) -> ::core::result::Result<#env::IndexQuery<Self>, #env::Error> {
                __cipher
                    .index(<Self as #env::Record>::TABLE, Self::#f())?
                    .query(&[#(#inputs),*], |r: &Self| ::std::vec![#(#extracts),*])
                    .await
            }
        }
    });

    let field_list = sealed_fields.chain(index_fields);
    Ok(quote! {
        #[doc = #doc]
        #[derive(::core::clone::Clone, #(#extra_derives),*)]
        #serde_attrs
        #vis struct #sealed_name {
            #(#field_list),*
        }

        impl #env::Record for #name {
            type Sealed = #sealed_name;
            const TABLE: &'static str = #table;

            fn seal(
                &self,
                __cipher: &#env::FieldCipher,
            ) -> impl ::core::future::Future<Output = ::core::result::Result<#sealed_name, #env::Error>> + ::core::marker::Send {
                async move {
                    #seal_pk
                    #(#seal_stmts)*
                    #(#index_stmts)*
                    ::core::result::Result::Ok(#sealed_name { #(#sealed_inits,)* #(#index_inits,)* })
                }
            }

            fn open(
                __sealed: &#sealed_name,
                __cipher: &#env::FieldCipher,
            ) -> impl ::core::future::Future<Output = ::core::result::Result<Self, #env::Error>> + ::core::marker::Send {
                async move {
                    #open_pk
                    ::core::result::Result::Ok(Self { #(#open_inits,)* })
                }
            }
        }

        impl #name {
            #(#index_defs)*
            #(#query_fns)*
        }
    })
}
