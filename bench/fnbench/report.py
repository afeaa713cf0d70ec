def write_readme(result, out, pngs): pass
