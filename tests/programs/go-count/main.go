// A Go program for the restart tests (tests/runtimes.rs): four worker goroutines fed
// by a ticker, and signal.Notify for SIGUSR1 and SIGTERM. It counts to 30, prints
// "ready" and waits for SIGUSR1 (where the test checkpoints and restarts it), counts to
// 60, prints "done" and exits 0 on SIGTERM. Its output depends only on the signals.
package main

import (
	"fmt"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"
)

func main() {
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGUSR1, syscall.SIGTERM)
	results := make(chan int, 64)
	var wg sync.WaitGroup
	work := make(chan int)
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := range work {
				s := 0
				for i := 0; i < n*1000; i++ {
					s += i % 7
				}
				results <- s
			}
		}()
	}
	ticker := time.NewTicker(10 * time.Millisecond)
	defer ticker.Stop()
	total := 0
	for i := 1; i <= 60; i++ {
		<-ticker.C
		work <- i
		total += <-results
		fmt.Println(i, total)
		if i == 30 {
			fmt.Println("ready")
			if s := <-sigs; s != syscall.SIGUSR1 {
				fmt.Println("unexpected", s)
				os.Exit(1)
			}
			fmt.Println("usr1")
		}
	}
	close(work)
	wg.Wait()
	fmt.Println("done")
	if s := <-sigs; s == syscall.SIGTERM {
		fmt.Println("term")
		os.Exit(0)
	}
	os.Exit(1)
}
