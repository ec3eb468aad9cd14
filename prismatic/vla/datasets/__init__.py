"""Training data: LIBERO HDF5 demonstrations (`libero_hdf5`), the dataset and collator (`datasets`), statistics and
augmentation. Import the submodules directly; this package keeps no imports so that light users stay light."""
