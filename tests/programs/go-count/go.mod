module lifeboat/go-count

go 1.19
