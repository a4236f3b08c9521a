"""Reading CheXpert (or the synthetic phantom), splitting it, caching decoded images, loading batches."""
