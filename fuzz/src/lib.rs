//! Properties shared by the fuzz targets, written from the README's promises rather than
//! from the code under test, so that a target fails when the two disagree.

pub mod leaks;
pub mod paths;
pub mod yaml;
