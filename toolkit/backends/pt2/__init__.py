"""AOTInductor packages (.pt2): exporter (`export`: torch.export + AOTInductor) and runner
(`runner`: aoti_load_package, with the package checked before it is unpacked)."""
