"""The file store: h5 outputs written in chunks renamed into place, their locks, the recipes and
fingerprints that say what made them, and the readers of images and pairs files."""
