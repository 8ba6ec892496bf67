"""Reading images and writing files safely."""
