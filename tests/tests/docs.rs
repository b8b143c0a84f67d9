//! docs/architecture.md is the map of the repository: every file it links to exists, so a
//! module that moves cannot leave the map pointing at nothing.
use anyhow::{Context, Result, ensure};

/// The targets of the relative Markdown links `](target)` in `text`.
fn relative_links(text: &str) -> Vec<&str> {
    text.split("](")
        .skip(1)
        .filter_map(|rest| rest.split(')').next())
        .filter(|target| !target.contains("://") && !target.starts_with('#'))
        .collect()
}

#[test]
fn every_link_of_the_architecture_map_names_a_file() -> Result<()> {
    let docs = image_builder::compile::workspace_root().join("docs");
    let path = docs.join("architecture.md");
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let links = relative_links(&text);
    ensure!(links.len() > 40, "only {} links", links.len());
    let missing: Vec<&&str> = links
        .iter()
        .filter(|target| {
            !docs
                .join(target.split('#').next().unwrap_or_default())
                .exists()
        })
        .collect();
    ensure!(
        missing.is_empty(),
        "docs/architecture.md links to missing files: {missing:?}"
    );
    Ok(())
}

#[test]
fn links_are_found() {
    assert_eq!(
        relative_links("a [x](../a.rs) b [y](https://e.invalid/) [z](b.md#c) [w](#top)"),
        ["../a.rs", "b.md#c"]
    );
}
